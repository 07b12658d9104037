//! `parallel` moderation mode: the upstream call starts while input moderation is still
//! running, and its answer is held (no head, no byte) until the verdict passes. A block
//! drops the upstream call mid-flight, which cancels it.

use std::future::Future;

use crate::stages::moderation::{passes, Judged, PendingVerdict};

/// Runs the verdict and the upstream call together. Returns the verdict and, unless it
/// refused before upstream answered, upstream's answer (to be discarded on a refusal).
pub async fn race<F: Future>(verdict: PendingVerdict, send: F) -> (Judged, Option<F::Output>) {
    tokio::pin!(send);
    let mut verdict = verdict;
    tokio::select! {
        judged = &mut verdict => {
            if passes(&judged) {
                let sent = send.await;
                (judged, Some(sent))
            } else {
                // Returning drops `send`: the upstream request is cancelled.
                (judged, None)
            }
        }
        sent = &mut send => (verdict.await, Some(sent)),
    }
}
