//! Refuses keys and end users the abuse analyzer throttles (distillation with
//! `[abuse] distillation_action = "throttle"`): 429 `abuse_throttled` with `retry-after`.
//! One atomic load while nobody is throttled.

use crate::abuse::Abuse;
use crate::error::WardenError;
use crate::pipeline::{RequestContext, Stage, Step, Verdict};

pub struct AbuseGate {
    abuse: Abuse,
}

impl AbuseGate {
    pub fn new(abuse: Abuse) -> Self {
        Self { abuse }
    }
}

impl Stage for AbuseGate {
    fn name(&self) -> &'static str {
        "abuse_gate"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        let Some(key) = ctx.key_name() else {
            return Step::Ready(Ok(Verdict::Allow));
        };
        let user = ctx.end_user.as_ref().map(|u| u.id.as_str());
        Step::Ready(match self.abuse.throttled(key, user) {
            Some(retry_after) => Err(WardenError::AbuseThrottled { retry_after }),
            None => Ok(Verdict::Allow),
        })
    }
}
