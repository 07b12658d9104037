//! Network policy, after the end user is known and before any limit is spent: the client
//! IP's country against `[geo]` (403 `unsupported_country_region_territory`, as OpenAI
//! answers). No I/O: one in-memory database lookup.

use std::sync::Arc;

use crate::config::geo::{GeoConfig, Unknown};
use crate::error::WardenError;
use crate::geo::{Country, GeoDb};
use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};

pub struct NetworkPolicy {
    geo: Option<Arc<GeoDb>>,
    deny: Vec<Country>,
    unknown: Unknown,
}

impl NetworkPolicy {
    pub fn new(geo: Option<Arc<GeoDb>>, config: &GeoConfig) -> Self {
        Self {
            geo,
            deny: config
                .deny
                .iter()
                .filter_map(|c| Country::parse(c))
                .collect(),
            unknown: config.unknown,
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
        Ok(Verdict::Allow)
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
