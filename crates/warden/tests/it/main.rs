//! Warden's integration tests, one binary (one link) for all of them: each module starts
//! the real `warden` binary (or its parts) against the stand-in upstream, real SQLite,
//! PostgreSQL and Redis. Shared helpers live in `common` and `audit_support`.
//! `jailbreak_eval` stays a binary of its own: it needs no server.

mod abuse;
mod admin_errors;
mod audit;
mod audit_support;
mod bad_input;
mod cli_remote;
mod common;
mod connections;
mod dashboard;
mod enforcement;
mod geo;
mod key_hygiene;
mod keys;
mod limits;
mod limits_cluster;
mod local_filters;
mod lockdown;
mod logs;
mod moderation;
mod moderation_parallel;
mod notices;
mod operations;
mod outages;
mod output_filters;
mod pacing;
mod proxy;
mod realtime;
mod reload;
mod report;
mod request_corpus;
mod routes;
mod safety_profiles;
mod secret_rules;
mod spend;
mod streaming;
mod tokens;
mod upstream_retries;
mod vault;
