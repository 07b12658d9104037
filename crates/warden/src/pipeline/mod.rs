//! The request pipeline: a fixed list of small stages, each allowing, rewriting or
//! blocking with a typed reason. The order lives in `Pipeline::standard` and nowhere else.

mod context;
pub mod deferred;
mod finding;

pub use context::{RequestContext, StageRecord, Verdict};
pub use finding::{Finding, Side};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::WardenError;
use crate::stages;

pub type StageResult = Result<Verdict, WardenError>;

/// A stage that needs no I/O answers at once; one that waits returns a future.
pub enum Step<'a> {
    Ready(StageResult),
    Pending(Pin<Box<dyn Future<Output = StageResult> + Send + 'a>>),
}

pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a>;
}

pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

/// What the standard stages need from the running gateway.
pub struct StageDeps {
    pub keys: Arc<crate::keys::KeyRegistry>,
    pub enforcement: Arc<crate::enforcement::Enforcement>,
    pub safety_ids: Arc<crate::identity::safety_id::SafetyIdentifiers>,
    pub max_body_bytes: usize,
    pub body_timeout: std::time::Duration,
    pub limits: Arc<crate::config::limits::LimitsConfig>,
    pub limiter: crate::limits::Limiter,
    pub moderator: Arc<crate::safety::moderation::Moderator>,
    pub filters: Arc<crate::safety::profiles::KeyFilters>,
    /// The country database (`[geo] database`), when configured.
    pub geo: Option<Arc<crate::geo::GeoDb>>,
    pub geo_config: crate::config::geo::GeoConfig,
    pub lockdown: crate::lockdown::Lockdown,
    pub abuse: crate::abuse::Abuse,
    pub spend: crate::spend::Spend,
    pub store: crate::store::Store,
}

impl Pipeline {
    /// The request path, in order:
    /// 1. `authenticate` — the virtual key (Bearer), or a user token alone for keys that
    ///    serve browsers and phones directly. Before anything reads the body.
    /// 2. `read_body` — reads the body within `max_body_bytes` and the body timeout,
    ///    parses the JSON once, and checks the type of every field Warden reads.
    ///    `key_scope` — the key's endpoints and models, store and config keys alike (403;
    ///    400 `model_required` for a model-scoped key naming no model).
    ///    `objects` — another key's file, batch, stored response… is a 404, as OpenAI
    ///    answers for an object that does not exist (`routes::ownership`).
    /// 3. `end_user` — names the end user from the token, the `X-Warden-User` header or,
    ///    on trusted keys, the body's `safety_identifier` / `user`, per the key's policy,
    ///    and works out their tier once (claim, key, `default_tier`).
    ///    `lockdown` — while the switch is on: requests naming no end user, the refused
    ///    tiers and end users never seen before get 403 `lockdown` (before
    ///    `user_standing` records the user as seen).
    /// 4. `user_standing` — banned and suspended end users are refused (403) before any
    ///    upstream call; throttled ones drop to a lower tier; warned ones get a header.
    /// 5. `network_policy` — the client IP's country against `[geo]` (403
    ///    `unsupported_country_region_territory`). Before limits, so refused traffic
    ///    spends no budget.
    /// 6. `abuse_gate` — keys and end users the abuse analyzer throttles (429
    ///    `abuse_throttled`).
    /// 7. `limits` — volume before content, cheapest refusal first: `n` and output caps,
    ///    prompt tokens against the per-request
    ///    cap, then rate/token/in-flight limits of organization, key, end user (by tier)
    ///    and client IP (one Redis round trip when shared). 429 with OpenAI's headers.
    ///    Then `spend` (its own stage): daily and monthly spend budgets of organization,
    ///    key and end user (in memory, no I/O); 429 `budget_exceeded` naming the budget.
    /// 8. `local_filters` — no network: jailbreak score, secrets and PII rules over every
    ///    user text; blocks (400 `content_filter`), redacts secrets in place, records flags.
    ///    Before `moderation`, so the endpoint only sees what local filters let through.
    /// 9. `moderation` — the Moderation endpoint on what the content-hash cache has not
    ///    seen; per-category policy; 400 `content_filter` on a block, 503 when the
    ///    endpoint fails and the key's `on_error` is `block`.
    /// 10. `safety_identifier` — writes the keyed hash of (key, end user) into the body.
    /// 11. `uploaded_file` — a batch or fine-tune file, line by line: each line's body
    ///     through the key's scope, local filters, moderation (batched) and its own
    ///     safety identifier; any refused line refuses the upload (`routes::batch_file`).
    pub fn standard(deps: StageDeps) -> Pipeline {
        Pipeline {
            stages: vec![
                Box::new(stages::authenticate::Authenticate::new(deps.keys)),
                Box::new(stages::read_body::ReadBody::new(
                    deps.max_body_bytes,
                    deps.body_timeout,
                )),
                Box::new(stages::key_scope::KeyScopeCheck::new(deps.limits.clone())),
                Box::new(stages::objects::Objects::new(deps.store)),
                Box::new(stages::end_user::ResolveEndUser::new(deps.limits.clone())),
                Box::new(stages::lockdown::LockdownGate::new(
                    deps.lockdown,
                    deps.enforcement.clone(),
                )),
                Box::new(stages::user_standing::UserStanding::new(deps.enforcement)),
                Box::new(stages::network_policy::NetworkPolicy::new(
                    deps.geo,
                    &deps.geo_config,
                )),
                Box::new(stages::abuse_gate::AbuseGate::new(deps.abuse)),
                Box::new(stages::limits::Limits::new(
                    deps.limits.clone(),
                    deps.limiter,
                )),
                Box::new(stages::spend::SpendBudgets::new(deps.spend)),
                Box::new(stages::local_filters::LocalFilters::new(
                    deps.filters.clone(),
                )),
                Box::new(stages::moderation::Moderate::new(deps.moderator.clone())),
                Box::new(stages::safety_identifier::InjectSafetyIdentifier::new(
                    deps.safety_ids.clone(),
                )),
                Box::new(stages::uploaded_file::UploadedFile::new(
                    crate::routes::batch_file::Checker {
                        limits: deps.limits,
                        filters: deps.filters,
                        moderator: deps.moderator,
                        safety_ids: deps.safety_ids,
                    },
                )),
            ],
        }
    }

    pub fn new(stages: Vec<Box<dyn Stage>>) -> Pipeline {
        Pipeline { stages }
    }

    /// Runs every stage in order; the first block ends the run.
    pub async fn run(&self, ctx: &mut RequestContext) -> Result<(), WardenError> {
        for stage in &self.stages {
            // Timed so the tail can be attributed to a stage; a clock read costs ~20 ns.
            let started = std::time::Instant::now();
            let result = match stage.run(ctx) {
                Step::Ready(result) => result,
                Step::Pending(future) => future.await,
            };
            ctx.trail.push(StageRecord {
                stage: stage.name(),
                verdict: result.as_ref().ok().copied(),
                micros: u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX),
            });
            result?;
        }
        Ok(())
    }
}
