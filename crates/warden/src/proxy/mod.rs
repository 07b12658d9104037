//! Forwarding: the upstream client, the headers that cross, the relayed body, and the
//! handler that runs the pipeline around them.

pub mod body;
pub mod client_ip;
pub mod handler;
pub mod headers;
pub mod metrics;
pub mod observe;
pub mod output;
pub mod pacing;
pub mod recorder;
pub mod respond;
pub mod retry;
pub mod settle;
pub mod strip_usage;
pub mod upstream;
