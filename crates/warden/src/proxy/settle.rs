//! Settles what an answered request's `usage` says, once: the token limits' estimate, the
//! spend counters and the abuse detector's long-output signal. One watcher per response
//! keeps one tail of shared frames and reads its `usage` once at the end.

use bytes::Bytes;
use http::response::Parts;
use std::sync::Arc;

use crate::abuse::Abuse;
use crate::endpoint::Endpoint;
use crate::limits::Ticket;
use crate::openai::usage::Tail;
use crate::pipeline::RequestContext;
use crate::proxy::observe::{ObserverFactory, RelayEnd, ResponseObserver};
use crate::spend::Spend;

pub struct UsageSettlement {
    pub spend: Spend,
    pub abuse: Abuse,
}

impl ObserverFactory for UsageSettlement {
    fn observe(&self, ctx: &RequestContext, head: &Parts) -> Option<Box<dyn ResponseObserver>> {
        let success = head.status.is_success();
        let key = ctx.key_name().map(str::to_owned);
        let user = ctx.end_user.as_ref().map(|u| u.id.clone());
        let spend = (success && self.spend.enabled())
            .then(|| Some((key.clone()?, ctx.model.clone()?)))
            .flatten();
        let generates = matches!(
            ctx.endpoint,
            Endpoint::ChatCompletions | Endpoint::Responses | Endpoint::Completions
        );
        let abuse = (success && generates && self.abuse.enabled())
            .then(|| key.clone())
            .flatten();
        if ctx.limit_ticket.is_none() && spend.is_none() && abuse.is_none() {
            return None;
        }
        Some(Box::new(Settle {
            ticket: ctx.limit_ticket.clone(),
            success,
            spend: spend.map(|(key, model)| (self.spend.clone(), key, model)),
            abuse: abuse.map(|key| (self.abuse.clone(), key)),
            user,
            tail: Tail::default(),
        }))
    }
}

struct Settle {
    ticket: Option<Arc<Ticket>>,
    success: bool,
    spend: Option<(Spend, String, String)>,
    abuse: Option<(Abuse, String)>,
    user: Option<String>,
    tail: Tail,
}

impl ResponseObserver for Settle {
    fn frame(&mut self, data: &Bytes) {
        self.tail.push(data);
    }

    fn end(&mut self, how: RelayEnd) {
        if !self.success {
            // OpenAI does not charge refused requests: give the estimate back.
            if let Some(ticket) = &self.ticket {
                ticket.settle(Some(0));
            }
            return;
        }
        let usage = self.tail.usage();
        if let Some(ticket) = &self.ticket {
            if how != RelayEnd::Complete && usage.is_none() {
                tracing::debug!("response ended without usage; keeping the prompt estimate");
            }
            ticket.settle(usage.map(|u| u.total));
        }
        let Some(usage) = usage else {
            // A stream cut before its usage chunk: its cost is unknown.
            return;
        };
        if let Some((spend, key, model)) = &self.spend {
            spend.record(key, self.user.as_deref(), model, usage);
        }
        if let (Some((abuse, key)), RelayEnd::Complete) = (self.abuse.take(), how) {
            abuse.observe_output(key, self.user.take(), usage.output);
        }
    }
}
