//! A stage's verdict that is still being worked out when the stages have run (input
//! moderation in `parallel` mode). The pipeline owns it: the upstream call starts while
//! the verdict runs, upstream's answer is held (no head, no byte) until the verdict
//! passes, and a refusal drops the upstream call mid-flight, which cancels it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{RequestContext, StageResult};
use crate::error::WardenError;

/// What a deferred verdict came to: whether it lets the request go on, and how it is
/// written into the context (findings, flags, the refusal).
pub struct Settled {
    pub passes: bool,
    apply: Box<dyn FnOnce(&mut RequestContext) -> StageResult + Send>,
}

impl Settled {
    pub fn new(
        passes: bool,
        apply: impl FnOnce(&mut RequestContext) -> StageResult + Send + 'static,
    ) -> Settled {
        Settled {
            passes,
            apply: Box::new(apply),
        }
    }
}

type Judging = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// The `Mutex` only makes it `Sync` (the context is shared while upstream is called); it
/// is never contended, as polling needs `&mut` anyway.
pub struct Deferred {
    stage: &'static str,
    judging: std::sync::Mutex<Judging>,
}

impl Deferred {
    pub fn new(
        stage: &'static str,
        judging: impl Future<Output = Settled> + Send + 'static,
    ) -> Self {
        Deferred {
            stage,
            judging: std::sync::Mutex::new(Box::pin(judging)),
        }
    }
}

impl Future for Deferred {
    type Output = Settled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        match self.get_mut().judging.get_mut() {
            Ok(judging) => judging.as_mut().poll(cx),
            Err(poisoned) => poisoned.into_inner().as_mut().poll(cx),
        }
    }
}

/// Runs a deferred verdict and the upstream call together. Returns the verdict and, unless
/// it refused before upstream answered, upstream's answer (discarded on a refusal).
pub async fn race<F: Future>(
    verdict: Deferred,
    send: F,
) -> (&'static str, Settled, Option<F::Output>) {
    let stage = verdict.stage;
    tokio::pin!(send);
    let mut verdict = verdict;
    tokio::select! {
        settled = &mut verdict => {
            if settled.passes {
                let sent = send.await;
                (stage, settled, Some(sent))
            } else {
                // Returning drops `send`: the upstream request is cancelled.
                (stage, settled, None)
            }
        }
        sent = &mut send => (stage, verdict.await, Some(sent)),
    }
}

/// Writes a verdict that arrived after the stages ran into the context; a refusal also
/// marks the stage's entry in the trail as the one that blocked.
pub fn settle(
    ctx: &mut RequestContext,
    stage: &'static str,
    settled: Settled,
) -> Result<(), WardenError> {
    let result = (settled.apply)(ctx);
    if result.is_err() {
        if let Some(record) = ctx.trail.iter_mut().rev().find(|r| r.stage == stage) {
            record.verdict = None;
        }
    }
    result.map(|_| ())
}
