//! Warden: an OpenAI-compatible gateway that keeps an organization's OpenAI account in
//! good standing. The binary (`main.rs`) only parses the command line; everything else
//! lives here so tests can build the whole gateway in-process.

pub mod abuse;
pub mod admin;
pub mod admin_api;
pub mod alerts;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod endpoint;
pub mod enforcement;
pub mod error;
pub mod events;
pub mod gateway;
pub mod geo;
pub mod hygiene;
pub mod identity;
pub mod json_body;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod lockdown;
pub mod logs;
pub mod notices;
pub mod openai;
pub mod pipeline;
pub mod proxy;
pub mod realtime;
pub mod reload;
pub mod report;
pub mod routes;
pub mod safety;
pub mod secret;
pub mod server;
pub mod spend;
pub mod stages;
pub mod startup;
pub mod store;
pub mod vault;
