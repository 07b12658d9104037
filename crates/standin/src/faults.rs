//! Faults on cue: parse `x-standin-fault` specs and keep the queue of faults for the next N calls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The request header that carries a fault spec.
pub(crate) const HEADER: &str = "x-standin-fault";

/// Most entries the queue holds; a test never needs more.
const QUEUE_CAP: usize = 1024;

/// What to do wrong on one call. Specs look like `status=429` or
/// `delay_ms=100,chunk_delay_ms=5,cut_after=3` (separated by `,`, `;`, `&` or spaces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Answer with this error status instead of the real answer.
    pub(crate) status: Option<u16>,
    /// Wait this long before answering (streams: before the first byte).
    pub(crate) delay_ms: Option<u64>,
    /// Streams: send this many chunks, then drop the connection.
    pub(crate) cut_after: Option<usize>,
    /// Streams: wait this long between chunks.
    pub(crate) chunk_delay_ms: Option<u64>,
}

impl Fault {
    /// Parses a spec; an empty spec is no fault.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        let mut fault = Self::default();
        let items = spec
            .split(|c: char| c == ',' || c == ';' || c == '&' || c.is_whitespace())
            .filter(|item| !item.is_empty());
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!("fault `{item}` is not key=value"));
            };
            let number = |what: &str| -> Result<u64, String> {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("fault `{what}` wants a whole number, got `{value}`"))
            };
            match key.trim() {
                "status" => {
                    let status = number("status")?;
                    if !(400..=599).contains(&status) {
                        return Err(format!("fault status must be 400..=599, got {status}"));
                    }
                    fault.status = u16::try_from(status).ok();
                }
                "delay_ms" => fault.delay_ms = Some(number("delay_ms")?),
                "cut_after" => {
                    fault.cut_after = usize::try_from(number("cut_after")?).ok();
                }
                "chunk_delay_ms" => fault.chunk_delay_ms = Some(number("chunk_delay_ms")?),
                other => {
                    return Err(format!(
                    "unknown fault `{other}` (known: status, delay_ms, cut_after, chunk_delay_ms)"
                ))
                }
            }
        }
        Ok(fault)
    }

    /// This fault with every field that `over` sets taken from `over`.
    pub(crate) fn overridden_by(self, over: Self) -> Self {
        Self {
            status: over.status.or(self.status),
            delay_ms: over.delay_ms.or(self.delay_ms),
            cut_after: over.cut_after.or(self.cut_after),
            chunk_delay_ms: over.chunk_delay_ms.or(self.chunk_delay_ms),
        }
    }
}

/// A queued fault and how many more calls it applies to.
#[derive(Debug)]
struct Queued {
    fault: Fault,
    remaining: u32,
    /// Only calls whose path starts with this are affected; `None` means every `/v1` call.
    path_prefix: Option<String>,
}

/// Faults queued through the control API, applied to the next matching `/v1` calls in order.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    entries: Mutex<VecDeque<Queued>>,
    /// Mirrors `entries.len()` so the common empty case takes no lock.
    len: AtomicUsize,
}

impl FaultQueue {
    /// Queues `fault` for the next `count` calls (whose path starts with `path_prefix`, if given).
    pub(crate) fn push(
        &self,
        fault: Fault,
        count: u32,
        path_prefix: Option<String>,
    ) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let mut entries = self.entries.lock().map_err(|_| "fault queue poisoned")?;
        if entries.len() >= QUEUE_CAP {
            return Err(format!("fault queue is full ({QUEUE_CAP} entries)"));
        }
        entries.push_back(Queued {
            fault,
            remaining: count,
            path_prefix,
        });
        self.len.store(entries.len(), Ordering::Release);
        Ok(())
    }

    /// Takes one use of the first queued fault that applies to `path`.
    pub(crate) fn take(&self, path: &str) -> Option<Fault> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        let index = entries.iter().position(|queued| {
            queued
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
        })?;
        let queued = entries.get_mut(index)?;
        let fault = queued.fault;
        queued.remaining -= 1;
        if queued.remaining == 0 {
            entries.remove(index);
        }
        self.len.store(entries.len(), Ordering::Release);
        Some(fault)
    }

    /// Forgets every queued fault.
    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
            self.len.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_single_faults() {
        assert_eq!(Fault::parse("status=429").unwrap().status, Some(429));
        assert_eq!(Fault::parse("delay_ms=250").unwrap().delay_ms, Some(250));
        assert_eq!(Fault::parse("cut_after=3").unwrap().cut_after, Some(3));
        assert_eq!(
            Fault::parse("chunk_delay_ms=7").unwrap().chunk_delay_ms,
            Some(7)
        );
        assert_eq!(Fault::parse("").unwrap(), Fault::default());
    }

    #[test]
    fn parses_combined_faults() {
        let fault = Fault::parse(" delay_ms=5, cut_after=2;chunk_delay_ms=1 & status=503").unwrap();
        assert_eq!(
            fault,
            Fault {
                status: Some(503),
                delay_ms: Some(5),
                cut_after: Some(2),
                chunk_delay_ms: Some(1)
            }
        );
    }

    #[test]
    fn rejects_bad_faults() {
        assert!(Fault::parse("status=200").is_err());
        assert!(Fault::parse("status=abc").is_err());
        assert!(Fault::parse("explode=1").is_err());
        assert!(Fault::parse("cut_after").is_err());
        assert!(Fault::parse("delay_ms=-1").is_err());
    }

    #[test]
    fn header_overrides_queue() {
        let queued = Fault::parse("status=500,delay_ms=3").unwrap();
        let header = Fault::parse("status=429").unwrap();
        let merged = queued.overridden_by(header);
        assert_eq!(merged.status, Some(429));
        assert_eq!(merged.delay_ms, Some(3));
    }

    #[test]
    fn queue_counts_down_and_filters_by_path() {
        let queue = FaultQueue::default();
        let five_hundred = Fault::parse("status=500").unwrap();
        let four_twenty_nine = Fault::parse("status=429").unwrap();
        queue
            .push(five_hundred, 2, Some("/v1/safety/cases".to_owned()))
            .unwrap();
        queue.push(four_twenty_nine, 1, None).unwrap();
        assert_eq!(queue.take("/v1/safety/cases/C-1"), Some(five_hundred));
        assert_eq!(queue.take("/v1/chat/completions"), Some(four_twenty_nine));
        assert_eq!(queue.take("/v1/chat/completions"), None);
        assert_eq!(queue.take("/v1/safety/cases/C-1"), Some(five_hundred));
        assert_eq!(queue.take("/v1/safety/cases/C-1"), None);
        queue.push(five_hundred, 0, None).unwrap();
        assert_eq!(queue.take("/v1/models"), None);
    }

    #[test]
    fn clear_forgets_everything() {
        let queue = FaultQueue::default();
        queue
            .push(Fault::parse("status=500").unwrap(), 5, None)
            .unwrap();
        queue.clear();
        assert_eq!(queue.take("/v1/models"), None);
    }
}
