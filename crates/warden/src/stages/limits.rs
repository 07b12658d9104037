//! Volume before content. Checks the key's allowed endpoints and models, caps `n`
//! and output tokens, counts prompt tokens against the per-request cap, asks upstream
//! for stream usage, then admits the request against every actor's rate limits.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::config::limits::{Caps, LimitsConfig, Rates};
use crate::endpoint::Endpoint;
use crate::error::WardenError;
use crate::json_body::JsonBody;
use crate::limits::{tokens, Admission, Limiter, Ticket};
use crate::pipeline::{RequestContext, Stage, Step, Verdict};
use crate::proxy::pacing::Priority;

pub struct Limits {
    config: Arc<LimitsConfig>,
    limiter: Limiter,
    /// Each tier's rank for upstream pacing: tiers with bigger budgets rank higher.
    priorities: HashMap<String, Priority>,
}

/// What the policy part decided before the rate limiter is asked.
struct Prepared {
    key: String,
    key_rates: Rates,
    user: Option<(String, String, Rates)>,
    prompt_tokens: u64,
    rewrote: bool,
    strip_usage_chunk: bool,
    priority: Priority,
}

impl Limits {
    pub fn new(config: Arc<LimitsConfig>, limiter: Limiter) -> Self {
        let priorities = tier_priorities(&config);
        Self {
            config,
            limiter,
            priorities,
        }
    }

    fn prepare(&self, ctx: &mut RequestContext) -> Result<Option<Prepared>, WardenError> {
        if !self.config.enabled {
            return Ok(None);
        }
        let key = ctx.key.clone().ok_or(WardenError::Internal)?;
        let key_limits = self.config.keys.get(&key.name);
        let model = ctx
            .model
            .clone()
            .or_else(|| crate::stages::key_scope::model_in_path(ctx));

        // A throttled user's lower tier (user_standing) wins over their own (end_user).
        let tier_name = ctx
            .tier_override
            .as_deref()
            .or(ctx.tier.as_deref())
            .unwrap_or(&self.config.default_tier)
            .to_owned();
        let tier = self.config.tiers.get(&tier_name);
        let mut caps = self.config.caps;
        if let Some(k) = key_limits {
            caps = caps.min(k.caps);
        }
        if let (Some(t), true) = (tier, ctx.end_user.is_some()) {
            caps = caps.min(t.caps);
        }

        let mut rewrote = false;
        let mut strip_usage_chunk = false;
        let mut prompt_tokens = 0;
        if let Some(body) = ctx.body.as_mut() {
            check_n(body, caps)?;
            let size = tokens::PromptSize::of(ctx.endpoint, &ctx.texts, body);
            prompt_tokens = size.estimate;
            if let Some(limit) = caps.max_prompt_tokens.filter(|l| size.upper_bound > *l) {
                // Only a prompt that might be over the cap pays for the exact count.
                prompt_tokens =
                    tokens::prompt_tokens(ctx.endpoint, model.as_deref().unwrap_or(""), body);
                if prompt_tokens > limit {
                    return Err(WardenError::PromptTooLong {
                        limit,
                        got: prompt_tokens,
                        param: prompt_param(ctx.endpoint),
                    });
                }
            }
            if let Some(cap) = caps.max_output_tokens {
                rewrote |= cap_output(ctx.endpoint, body, cap)?;
            }
            if ctx.endpoint == Endpoint::ChatCompletions && ctx.stream {
                strip_usage_chunk = ask_for_usage(body)?;
                rewrote |= strip_usage_chunk;
            }
        }
        let user = match (&ctx.end_user, tier) {
            (Some(user), Some(tier)) => Some((user.id.clone(), tier_name.clone(), tier.rates)),
            _ => None,
        };
        Ok(Some(Prepared {
            key: key.name.clone(),
            key_rates: key_limits.map_or(self.config.per_key, |k| k.rates),
            user,
            prompt_tokens,
            rewrote,
            strip_usage_chunk,
            priority: self.priorities.get(&tier_name).copied().unwrap_or_default(),
        }))
    }
}

impl Prepared {
    fn admission(&self, ctx: &RequestContext) -> Admission<'_> {
        Admission {
            key: &self.key,
            key_rates: self.key_rates,
            user: self
                .user
                .as_ref()
                .map(|(id, tier, rates)| (id.as_str(), tier.as_str(), *rates)),
            ip: ctx.client_ip,
            prompt_tokens: self.prompt_tokens,
        }
    }

    fn finish(&self, ctx: &mut RequestContext, mut ticket: Ticket) -> Verdict {
        ticket.strip_usage_chunk = self.strip_usage_chunk;
        ticket.priority = self.priority;
        ctx.limit_ticket = Some(Arc::new(ticket));
        if self.rewrote {
            Verdict::Rewrite
        } else {
            Verdict::Allow
        }
    }
}

impl Stage for Limits {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        let prepared = match self.prepare(ctx) {
            Ok(Some(p)) => p,
            Ok(None) => return Step::Ready(Ok(Verdict::Allow)),
            Err(err) => return Step::Ready(Err(err)),
        };
        if !self.limiter.is_shared() {
            let ticket = self.limiter.admit_local(&prepared.admission(ctx));
            return Step::Ready(ticket.map(|t| prepared.finish(ctx, t)));
        }
        Step::Pending(Box::pin(async move {
            let ticket = self.limiter.admit(&prepared.admission(ctx)).await?;
            Ok(prepared.finish(ctx, ticket))
        }))
    }
}

/// Ranks tiers by their requests per minute (unlimited highest); tiers with the same
/// budget share a rank. Rank 0 is shed first when upstream headroom runs out.
fn tier_priorities(config: &LimitsConfig) -> HashMap<String, Priority> {
    let budget = |rates: &Rates| rates.requests_per_minute.unwrap_or(u64::MAX);
    let mut levels: Vec<u64> = config.tiers.values().map(|t| budget(&t.rates)).collect();
    levels.sort_unstable();
    levels.dedup();
    let count = u8::try_from(levels.len()).unwrap_or(u8::MAX);
    config
        .tiers
        .iter()
        .map(|(name, tier)| {
            let rank = levels.partition_point(|l| *l < budget(&tier.rates));
            let priority = Priority {
                rank: u8::try_from(rank).unwrap_or(u8::MAX),
                levels: count,
            };
            (name.clone(), priority)
        })
        .collect()
}

/// `gpt-4o` matches exactly; `gpt-4o*` matches every model starting with `gpt-4o`.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

fn prompt_param(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "messages",
        Endpoint::Completions | Endpoint::ImagesGenerations => "prompt",
        _ => "input",
    }
}

/// A top-level field as a whole number; other types are left for upstream to refuse.
fn number(body: &JsonBody, name: &str) -> Option<f64> {
    body.raw(name).and_then(|raw| raw.get().parse::<f64>().ok())
}

fn check_n(body: &JsonBody, caps: Caps) -> Result<(), WardenError> {
    if let (Some(max), Some(n)) = (caps.max_n, number(body, "n")) {
        if n > max as f64 {
            return Err(WardenError::TooManyChoices {
                max,
                got: n.ceil() as u64,
            });
        }
    }
    Ok(())
}

fn set_u64(body: &mut JsonBody, name: &str, value: u64) -> Result<(), WardenError> {
    let raw = RawValue::from_string(value.to_string()).map_err(|_| WardenError::Internal)?;
    body.set_raw(name, raw);
    Ok(())
}

/// Clamps every output-length field the client set to `cap`; sets one when none is set
/// (except on legacy completions, whose default of 16 is already small).
fn cap_output(endpoint: Endpoint, body: &mut JsonBody, cap: u64) -> Result<bool, WardenError> {
    let (fields, default): (&[&str], Option<&str>) = match endpoint {
        Endpoint::ChatCompletions => (
            &["max_completion_tokens", "max_tokens"],
            Some("max_completion_tokens"),
        ),
        Endpoint::Responses => (&["max_output_tokens"], Some("max_output_tokens")),
        Endpoint::Completions => (&["max_tokens"], None),
        _ => return Ok(false),
    };
    let mut changed = false;
    let mut any = false;
    for field in fields {
        if let Some(value) = number(body, field) {
            any = true;
            if value > cap as f64 {
                set_u64(body, field, cap)?;
                changed = true;
            }
        }
    }
    if let (false, Some(field)) = (any, default) {
        set_u64(body, field, cap)?;
        changed = true;
    }
    Ok(changed)
}

/// Sets `stream_options.include_usage`; true when the client had not asked for it
/// (so the extra chunk is removed from what it receives).
fn ask_for_usage(body: &mut JsonBody) -> Result<bool, WardenError> {
    let mut options = match body
        .raw("stream_options")
        .map(|r| serde_json::from_str(r.get()))
    {
        None | Some(Ok(serde_json::Value::Null)) => serde_json::Map::new(),
        Some(Ok(serde_json::Value::Object(map))) => map,
        // Not an object: upstream will refuse it; leave it alone.
        Some(_) => return Ok(false),
    };
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return Ok(false);
    }
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    let text = serde_json::to_string(&options).map_err(|_| WardenError::Internal)?;
    body.set_raw(
        "stream_options",
        RawValue::from_string(text).map_err(|_| WardenError::Internal)?,
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body(text: &str) -> JsonBody {
        JsonBody::parse(text.as_bytes()).unwrap()
    }

    fn field(b: &JsonBody, name: &str) -> Option<String> {
        b.raw(name).map(|r| r.get().to_owned())
    }

    #[test]
    fn output_caps_clamp_and_default() {
        let mut b = body(r#"{"max_tokens":99999,"max_completion_tokens":10}"#);
        assert!(cap_output(Endpoint::ChatCompletions, &mut b, 100).unwrap());
        assert_eq!(field(&b, "max_tokens").as_deref(), Some("100"));
        assert_eq!(field(&b, "max_completion_tokens").as_deref(), Some("10"));
        let mut b = body(r#"{"model":"m"}"#);
        assert!(cap_output(Endpoint::ChatCompletions, &mut b, 100).unwrap());
        assert_eq!(field(&b, "max_completion_tokens").as_deref(), Some("100"));
        let mut b = body(r#"{"model":"m"}"#);
        assert!(cap_output(Endpoint::Responses, &mut b, 7).unwrap());
        assert_eq!(field(&b, "max_output_tokens").as_deref(), Some("7"));
        let mut b = body(r#"{"model":"m"}"#);
        assert!(!cap_output(Endpoint::Completions, &mut b, 7).unwrap());
        let mut b = body(r#"{"max_output_tokens":5}"#);
        assert!(!cap_output(Endpoint::Responses, &mut b, 7).unwrap());
    }

    #[test]
    fn include_usage_is_merged_into_stream_options() {
        let mut b = body(r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#);
        assert!(ask_for_usage(&mut b).unwrap());
        let options: serde_json::Value =
            serde_json::from_str(&field(&b, "stream_options").unwrap()).unwrap();
        assert_eq!(options["include_usage"], true);
        assert_eq!(options["include_obfuscation"], false);
        let mut asked = body(r#"{"stream_options":{"include_usage":true}}"#);
        assert!(!ask_for_usage(&mut asked).unwrap());
        assert!(!asked.changed());
    }

    #[test]
    fn n_and_models() {
        let caps = Caps {
            max_n: Some(2),
            ..Caps::default()
        };
        assert!(check_n(&body(r#"{"n":2}"#), caps).is_ok());
        assert!(matches!(
            check_n(&body(r#"{"n":3}"#), caps),
            Err(WardenError::TooManyChoices { max: 2, got: 3 })
        ));
        assert!(model_matches("gpt-4o*", "gpt-4o-mini"));
        assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    }
}
