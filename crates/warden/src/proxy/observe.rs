//! Passive watchers of a relayed response (usage accounting, metrics): they see every
//! frame and the end, and never change or delay a byte. Stages that must change the
//! output (moderation) transform the body instead.

use bytes::Bytes;
use http::response::Parts;

use crate::pipeline::RequestContext;

/// How a relayed response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    Complete,
    UpstreamBroke,
    ClientLeft,
}

pub trait ResponseObserver: Send {
    fn frame(&mut self, data: &Bytes);
    fn end(&mut self, how: RelayEnd);
}

/// Makes one observer per response it wants to watch.
pub trait ObserverFactory: Send + Sync {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>>;
}
