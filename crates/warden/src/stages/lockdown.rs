//! Lockdown's refusals, in one stage: while the switch is on, requests naming no end user
//! (unless `refuse_without_end_user = false`), end users of the refused tiers, and end
//! users Warden has never seen get 403 `lockdown`. Before `user_standing`, which records
//! a user as seen: a refused newcomer stays new, so retrying does not get them in.
//! Lockdown's other effects (lower limits, lower moderation thresholds) are applied to
//! the limiter and the moderator when the switch flips (`lockdown::Lockdown::apply`).

use std::sync::Arc;

use crate::enforcement::Enforcement;
use crate::error::WardenError;
use crate::lockdown::Lockdown;
use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};

pub struct LockdownGate {
    lockdown: Lockdown,
    enforcement: Arc<Enforcement>,
}

impl LockdownGate {
    pub fn new(lockdown: Lockdown, enforcement: Arc<Enforcement>) -> Self {
        Self {
            lockdown,
            enforcement,
        }
    }

    fn by_name_and_tier(&self, ctx: &RequestContext) -> Result<bool, WardenError> {
        Self::by_name_and_tier_with(self.lockdown.config(), ctx)
    }

    /// The checks that need no I/O; `Ok(true)` when the store must say whether the
    /// user is new.
    fn by_name_and_tier_with(
        config: &crate::config::lockdown::LockdownConfig,
        ctx: &RequestContext,
    ) -> Result<bool, WardenError> {
        if ctx.end_user.is_none() {
            return match config.refuse_without_end_user {
                true => Err(WardenError::Lockdown { tier: None }),
                false => Ok(false),
            };
        }
        if let Some(tier) = ctx.tier.as_deref() {
            if config.refuse_tiers.iter().any(|t| t == tier) {
                return Err(WardenError::Lockdown {
                    tier: Some(tier.to_owned()),
                });
            }
        }
        Ok(true)
    }

    async fn admit_known(&self, ctx: &RequestContext) -> StageResult {
        let (Some(key), Some(user)) = (ctx.key.as_deref(), ctx.end_user.as_ref()) else {
            return Ok(Verdict::Allow);
        };
        let known = self.enforcement.known(&key.name, &user.id).await.map_err(|err| {
            tracing::error!(%err, "lockdown: cannot tell whether the end user is new; refusing");
            WardenError::Internal
        })?;
        if !known {
            return Err(WardenError::Lockdown {
                tier: Some("new end user".into()),
            });
        }
        Ok(Verdict::Allow)
    }
}

impl Stage for LockdownGate {
    fn name(&self) -> &'static str {
        "lockdown"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        if !self.lockdown.is_on() {
            return Step::Ready(Ok(Verdict::Allow));
        }
        match self.by_name_and_tier(ctx) {
            Ok(true) => Step::Pending(Box::pin(self.admit_known(ctx))),
            Ok(false) => Step::Ready(Ok(Verdict::Allow)),
            Err(err) => Step::Ready(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::lockdown::LockdownConfig;
    use crate::config::EndUserPolicy;
    use crate::identity::{EndUser, UserSource};
    use crate::stages::testing::{context, key};

    #[test]
    fn refuses_untrusted_tiers_and_nameless_requests_only_while_on() {
        let lockdown = Lockdown::new(LockdownConfig {
            refuse_tiers: vec!["verified".into()],
            ..LockdownConfig::default()
        });
        let mut ctx = context(key("app", EndUserPolicy::Optional, false), b"{}");
        let gate = |lockdown: &Lockdown, ctx: &RequestContext| {
            if !lockdown.is_on() {
                return Ok(false);
            }
            let config = lockdown.config();
            // The stage without its enforcement handle: only the checks that need no I/O.
            LockdownGate::by_name_and_tier_with(config, ctx)
        };
        assert!(!gate(&lockdown, &ctx).unwrap(), "off: nothing is refused");
        lockdown.set_on_for_test(true);
        let err = gate(&lockdown, &ctx).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (403, "lockdown"));
        ctx.end_user = Some(EndUser {
            id: "alice".into(),
            source: UserSource::Header,
        });
        ctx.tier = Some("verified".into());
        let err = gate(&lockdown, &ctx).unwrap_err();
        assert!(err.message().contains("'verified'"), "{}", err.message());
        ctx.tier = Some("trusted".into());
        assert!(
            gate(&lockdown, &ctx).unwrap(),
            "a trusted tier goes on to the new-user check"
        );
    }
}
