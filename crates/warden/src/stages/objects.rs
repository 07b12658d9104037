//! Ownership of stored objects: a request for another key's file, batch, stored response
//! or conversation (in its path or named in its body) is refused with OpenAI's 404 before
//! anything goes upstream. The rules live in `routes::ownership`.

use crate::pipeline::{RequestContext, Stage, StageResult, Step, Verdict};
use crate::store::Store;

pub struct Objects {
    store: Store,
}

impl Objects {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn check(&self, ctx: &RequestContext) -> StageResult {
        crate::routes::ownership::check_request(&self.store, ctx).await?;
        Ok(Verdict::Allow)
    }
}

impl Stage for Objects {
    fn name(&self) -> &'static str {
        "objects"
    }

    fn run<'a>(&'a self, ctx: &'a mut RequestContext) -> Step<'a> {
        use crate::endpoint::Endpoint;
        // Only routes that touch stored objects (and responses that continue one) wait.
        if !matches!(ctx.endpoint, Endpoint::Rest(_) | Endpoint::Responses) {
            return Step::Ready(Ok(Verdict::Allow));
        }
        Step::Pending(Box::pin(self.check(ctx)))
    }
}
