//! One file per pipeline stage; `pipeline::Pipeline::standard` sets their order.

pub mod authenticate;
pub mod end_user;
pub mod limits;
pub mod local_filters;
pub mod moderation;
pub mod read_body;
pub mod safety_identifier;
pub mod spend;

#[cfg(test)]
pub(crate) mod testing;
