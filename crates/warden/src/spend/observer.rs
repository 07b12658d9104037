//! Prices each answered request from the `usage` in its response (streams included: the
//! limits stage asks for the usage chunk) and adds it to the spend counters.

use bytes::Bytes;
use http::response::Parts;

use super::Spend;
use crate::limits::usage::{usage_of, Tail};
use crate::pipeline::RequestContext;
use crate::proxy::observe::{ObserverFactory, RelayEnd, ResponseObserver};

pub struct SpendObservers(pub Spend);

impl ObserverFactory for SpendObservers {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>> {
        if !self.0.enabled() || !head.status.is_success() {
            return None;
        }
        Some(Box::new(SpendObserver {
            spend: self.0.clone(),
            key: ctx.key_name()?.to_owned(),
            user: ctx.end_user.as_ref().map(|u| u.id.clone()),
            model: ctx.model.clone()?,
            tail: Tail::default(),
        }))
    }
}

struct SpendObserver {
    spend: Spend,
    key: String,
    user: Option<String>,
    model: String,
    tail: Tail,
}

impl ResponseObserver for SpendObserver {
    fn frame(&mut self, data: &Bytes) {
        self.tail.push(data);
    }

    fn end(&mut self, _how: RelayEnd) {
        // A stream cut before its usage chunk is not counted (its cost is unknown).
        if let Some(usage) = usage_of(&self.tail.text()) {
            self.spend
                .record(&self.key, self.user.as_deref(), &self.model, usage);
        }
    }
}
