//! Content safety: what users send is checked before it can count against the account.
//! `text` finds the user text of a request; `filters` checks it locally, in microseconds.

pub mod filters;
pub mod moderation;
pub mod profiles;
