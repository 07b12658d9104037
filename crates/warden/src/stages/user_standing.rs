//! The end user's standing. Banned and suspended users are refused here, before
//! any upstream call; throttled users drop to a lower tier's limits; warned users get a
//! response header telling the service. One in-memory lookup; no I/O.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::enforcement::{Enforcement, Rung};
use crate::error::WardenError;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};

/// Tells the calling service that its end user is on the ladder: `warn` or `throttle`.
pub const STANDING_HEADER: HeaderName = HeaderName::from_static("x-warden-user-standing");

pub struct UserStanding {
    enforcement: Arc<Enforcement>,
}

impl UserStanding {
    pub fn new(enforcement: Arc<Enforcement>) -> Self {
        Self { enforcement }
    }

    fn decide(&self, ctx: &mut RequestContext) -> Result<Verdict, WardenError> {
        let (Some(key), Some(user)) = (ctx.key.as_deref(), ctx.end_user.as_ref()) else {
            return Ok(Verdict::Allow);
        };
        // The directory (safety identifier -> user) is kept even with enforcement off.
        self.enforcement.saw(&key.name, &user.id);
        if !self.enforcement.config().enabled {
            return Ok(Verdict::Allow);
        }
        let (rung, standing) = self.enforcement.rung(&key.name, &user.id);
        let reason = || {
            standing
                .as_ref()
                .and_then(|s| s.reason.clone())
                .unwrap_or_else(|| "repeated usage policy violations".into())
        };
        match rung {
            Rung::Banned => Err(WardenError::UserBanned { reason: reason() }),
            Rung::Suspended { until_ms } => Err(WardenError::UserSuspended {
                until_ms,
                reason: reason(),
            }),
            Rung::Throttled => {
                ctx.tier_override = Some(self.enforcement.config().throttle_tier.clone());
                ctx.response_headers
                    .push((STANDING_HEADER, HeaderValue::from_static("throttle")));
                Ok(Verdict::Allow)
            }
            Rung::Warned => {
                ctx.response_headers
                    .push((STANDING_HEADER, HeaderValue::from_static("warn")));
                Ok(Verdict::Allow)
            }
            Rung::Clear => Ok(Verdict::Allow),
        }
    }
}

impl Stage for UserStanding {
    fn name(&self) -> &'static str {
        "user_standing"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        Step::Ready(self.decide(ctx))
    }
}
