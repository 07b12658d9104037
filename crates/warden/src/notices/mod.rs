//! OpenAI safety notices: webhooks received, cases fetched, end users acted on.

pub mod signature;
