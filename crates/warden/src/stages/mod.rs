//! One file per pipeline stage; `pipeline::Pipeline::standard` sets their order.

pub mod abuse_gate;
pub mod authenticate;
pub mod end_user;
pub mod key_scope;
pub mod limits;
pub mod local_filters;
pub mod lockdown;
pub mod moderation;
pub mod network_policy;
pub mod objects;
pub mod read_body;
pub mod safety_identifier;
pub mod spend;
pub mod uploaded_file;
pub mod user_standing;

#[cfg(test)]
pub(crate) mod testing;
