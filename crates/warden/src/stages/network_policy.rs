//! Network and account-wide policy, after the end user is known and before any
//! limit is spent. The client IP's country against `[geo]` (403
//! `unsupported_country_region_territory`, as OpenAI answers), then lockdown's refusal of
//! untrusted tiers (403 `lockdown`). No I/O: one in-memory database lookup, one atomic.

use std::sync::Arc;

use crate::config::geo::{GeoConfig, Unknown};
use crate::config::limits::LimitsConfig;
use crate::error::WardenError;
use crate::geo::{Country, GeoDb};
use crate::lockdown::Lockdown;
use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};

pub struct NetworkPolicy {
    geo: Option<Arc<GeoDb>>,
    deny: Vec<Country>,
    unknown: Unknown,
    lockdown: Lockdown,
    limits: Arc<LimitsConfig>,
}

impl NetworkPolicy {
    pub fn new(
        geo: Option<Arc<GeoDb>>,
        config: &GeoConfig,
        lockdown: Lockdown,
        limits: Arc<LimitsConfig>,
    ) -> Self {
        Self {
            geo,
            deny: config
                .deny
                .iter()
                .filter_map(|c| Country::parse(c))
                .collect(),
            unknown: config.unknown,
            lockdown,
            limits,
        }
    }

    fn check(&self, ctx: &mut RequestContext) -> StageResult {
        if let Some(geo) = &self.geo {
            ctx.country = geo.country(ctx.client_ip);
            match ctx.country {
                Some(country) if self.deny.contains(&country) => {
                    return Err(WardenError::UnsupportedCountry {
                        country: Some(country.to_string()),
                    })
                }
                None if self.unknown == Unknown::Block => {
                    return Err(WardenError::UnsupportedCountry { country: None })
                }
                _ => {}
            }
        }
        if self.lockdown.is_on() {
            self.lockdown_check(ctx)?;
        }
        Ok(Verdict::Allow)
    }

    fn lockdown_check(&self, ctx: &RequestContext) -> Result<(), WardenError> {
        let config = self.lockdown.config();
        if ctx.end_user.is_none() {
            if config.refuse_without_end_user {
                return Err(WardenError::Lockdown { tier: None });
            }
            return Ok(());
        }
        let key = ctx.key_name().unwrap_or("");
        let claimed = ctx.user_claims.as_ref().and_then(|c| c.tier.as_deref());
        let tier = self.limits.tier_of(claimed, key);
        if config.refuse_tiers.iter().any(|t| t == tier) {
            return Err(WardenError::Lockdown {
                tier: Some(tier.to_owned()),
            });
        }
        Ok(())
    }
}

impl Stage for NetworkPolicy {
    fn name(&self) -> &'static str {
        "network_policy"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.check(ctx))
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

    fn stage(config: &GeoConfig, lockdown: Lockdown) -> NetworkPolicy {
        let limits = crate::config::Config::embedded_default().unwrap().limits;
        NetworkPolicy::new(None, config, lockdown, Arc::new(limits))
    }

    fn user(ctx: &mut RequestContext) {
        ctx.end_user = Some(EndUser {
            id: "alice".into(),
            source: UserSource::Header,
        });
    }

    #[test]
    fn lockdown_refuses_untrusted_tiers_and_nameless_requests_only_while_on() {
        let lockdown = Lockdown::new(LockdownConfig {
            refuse_tiers: vec!["verified".into()],
            ..LockdownConfig::default()
        });
        let stage = stage(&GeoConfig::default(), lockdown.clone());
        let mut ctx = context(key("app", EndUserPolicy::Optional, false), b"{}");
        assert!(stage.check(&mut ctx).is_ok());
        lockdown.set_on_for_test(true);
        let err = stage.check(&mut ctx).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (403, "lockdown"));
        user(&mut ctx);
        // The default tier is `verified`, refused by this config.
        let err = stage.check(&mut ctx).unwrap_err();
        assert!(err.message().contains("'verified'"), "{}", err.message());
    }
}
