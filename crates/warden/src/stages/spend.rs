//! Refuses a request whose organization, key or end user has used up a daily
//! or monthly spend budget (`spend::Spend::check`: in-memory counters, no I/O).

use crate::pipeline::{RequestContext, Stage, Step, Verdict};
use crate::spend::Spend;

pub struct SpendBudgets {
    spend: Spend,
}

impl SpendBudgets {
    pub fn new(spend: Spend) -> Self {
        Self { spend }
    }
}

impl Stage for SpendBudgets {
    fn name(&self) -> &'static str {
        "spend"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        let Some(key) = ctx.key_name() else {
            return Step::Ready(Ok(Verdict::Allow));
        };
        let user = ctx.end_user.as_ref().map(|u| u.id.as_str());
        Step::Ready(self.spend.check(key, user).map(|()| Verdict::Allow))
    }
}
