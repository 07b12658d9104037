//! What a Realtime session leaves on record and on the books: one event per refused client
//! event and per flagged or blocked output window (the strike ladder reads them), and the
//! tokens of each `response.done` against the spend budgets.

use crate::error::WardenError;
use crate::events::flags;
use crate::gateway::Gateway;
use crate::pipeline::{Finding, RequestContext};
use crate::proxy::output::OUTPUT_STAGE;
use crate::proxy::recorder::{Outcome, Recorder};

/// `response.done` usage: input (cached included), cached, output, total.
pub fn usage_of(usage: &serde_json::Value) -> crate::openai::usage::Usage {
    let n = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_u64).unwrap_or(0);
    let input = n(usage.get("input_tokens"));
    let output = n(usage.get("output_tokens"));
    let total = match n(usage.get("total_tokens")) {
        0 => input + output,
        total => total,
    };
    crate::openai::usage::Usage {
        input,
        cached_input: n(usage
            .get("input_token_details")
            .and_then(|d| d.get("cached_tokens"))),
        output,
        total,
    }
}

/// Counts a response's tokens against the spend budgets as soon as it is done.
pub fn charge(gateway: &Gateway, ctx: &RequestContext, usage: crate::openai::usage::Usage) {
    if !gateway.spend.enabled() {
        return;
    }
    if let (Some(key), Some(model)) = (ctx.key_name(), ctx.model.as_deref()) {
        let user = ctx.end_user.as_ref().map(|u| u.id.as_str());
        gateway.spend.record(key, user, model, usage);
    }
}

/// A `response.create` once the key or user is over a spend budget: refused like an
/// HTTP request would be, so an open session cannot outspend its caps.
pub fn over_budget(gateway: &Gateway, ctx: &RequestContext, frame: &str) -> Option<WardenError> {
    if !gateway.spend.enabled() || !frame.contains("\"response.create\"") {
        return None;
    }
    let key = ctx.key_name()?;
    let user = ctx.end_user.as_ref().map(|u| u.id.as_str());
    gateway.spend.check(key, user).err()
}

/// A refused client event: its own event, committed before the client hears of it,
/// carrying the flags that feed the strike ladder.
pub async fn record_refusal(gateway: &Gateway, ctx: &RequestContext, err: &WardenError) {
    let mut recorder = Recorder::new(
        gateway.events.clone(),
        &ctx.request_id,
        "realtime",
        ctx.client_ip.to_string(),
    );
    recorder.learn(ctx);
    recorder.blocked_by(err, ctx);
    if let WardenError::ContentFiltered(block) = err {
        recorder.note(Finding::Blocked {
            categories: block.categories.clone(),
        });
    }
    recorder.answered(err.status().as_u16(), None);
    recorder
        .close_durable(Outcome::Blocked, Some(err.code()))
        .await;
}

/// An output window's verdict, when it flagged or blocked: one `flag` event.
pub async fn record_output(
    gateway: &Gateway,
    session: &RequestContext,
    n: u64,
    judged: &Result<crate::safety::moderation::Checked, WardenError>,
) {
    let Ok(checked) = judged else {
        return;
    };
    if checked.flagged.is_empty() && checked.blocked.is_empty() {
        return;
    }
    let ctx = super::checks::event_context(session, 1_000_000 + n);
    let mut recorder = Recorder::new(
        gateway.events.clone(),
        &ctx.request_id,
        "realtime",
        ctx.client_ip.to_string(),
    );
    recorder.learn(&ctx);
    for hit in &checked.flagged {
        recorder.note(Finding::OutputFlag {
            categories: hit.categories.owned_names(),
        });
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::FLAG, hit));
    }
    for hit in &checked.blocked {
        recorder.note(Finding::OutputBlock {
            categories: hit.categories.owned_names(),
            by_moderation: true,
        });
        recorder.flag(flags::of_hit(OUTPUT_STAGE, flags::BLOCK, hit));
    }
    recorder.persist_flags().await;
    let outcome = if checked.blocked.is_empty() {
        Outcome::Allowed
    } else {
        Outcome::Blocked
    };
    recorder.answered(200, None);
    recorder.finish(outcome, Some("output_content_filter"));
}
