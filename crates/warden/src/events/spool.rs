//! The event spool: an append-only journal on local disk holding every stored event from
//! the moment it is recorded until the store has committed it.
//!
//! Why a journal in front of the store: an event written here (one `write(2)` into the page
//! cache) survives a kill -9 of Warden, and — with `fsync` for refusals and flags — a
//! power cut; while the store is unreachable the writer keeps nothing in memory and
//! replays from here, in sequence order, when it returns.
//!
//! Layout: `<dir>/<chain id>.<segment:06>.jsonl`, one JSON object per line carrying the
//! event's sequence number in its chain. A segment is deleted once every event in it is
//! committed. A line cut short by a crash is ignored on replay. The total size is capped
//! (`[events] spool_max_mb`); an alert is raised at 80 % and when it is full.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::EventRecord;
use crate::alerts::{Alert, Alerts, Severity};

/// A segment is closed when it grows past this.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// A fully committed open segment is closed (and deleted) once past this, so a healthy
/// gateway keeps a small journal.
const DRAINED_ROLL_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("event spool is full ({0} bytes)")]
    Full(u64),
    #[error("event spool I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Spool {
    /// Held (flock) for the process's life.
    _lock: File,
    dir: PathBuf,
    chain_id: String,
    max_bytes: u64,
    open: Mutex<Open>,
    /// Bytes on disk over every segment (this chain's and leftovers).
    bytes: AtomicU64,
    warned: AtomicBool,
    /// Set when an append did not fit; the alert goes out once per filling.
    full: AtomicBool,
    alerts: OnceLock<Alerts>,
}

#[derive(Default)]
struct Open {
    file: Option<Arc<File>>,
    segment: u64,
    segment_bytes: u64,
    /// The last sequence number written to the open segment.
    last_seq: i64,
    /// Closed segments of this chain: (path, bytes, last seq).
    closed: Vec<(PathBuf, u64, i64)>,
}

/// Where a replay has got to in one chain's segments.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    segment: u64,
    offset: u64,
}

/// One journal line. `Cow` so writing borrows the record and reading owns the text.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    seq: i64,
    request_id: Cow<'a, str>,
    at_ms: i64,
    kind: Cow<'a, str>,
    key_name: Option<Cow<'a, str>>,
    end_user: Option<Cow<'a, str>>,
    safety_identifier: Option<Cow<'a, str>>,
    client_ip: Option<Cow<'a, str>>,
    endpoint: Cow<'a, str>,
    model: Option<Cow<'a, str>>,
    stream: bool,
    status: u16,
    outcome: Cow<'a, str>,
    reason: Option<Cow<'a, str>>,
    latency_us: i64,
    upstream_us: Option<i64>,
    detail: Option<Cow<'a, str>>,
    country: Option<Cow<'a, str>>,
    content_sha256: Option<Cow<'a, str>>,
    content_len: Option<i64>,
    excerpt: Option<Cow<'a, str>>,
}

fn borrow(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn own(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

impl<'a> Line<'a> {
    fn of(seq: i64, e: &'a EventRecord) -> Line<'a> {
        Line {
            seq,
            request_id: Cow::Borrowed(&e.request_id),
            at_ms: e.at_ms,
            kind: Cow::Borrowed(e.kind),
            key_name: borrow(&e.key_name),
            end_user: borrow(&e.end_user),
            safety_identifier: borrow(&e.safety_identifier),
            client_ip: borrow(&e.client_ip),
            endpoint: Cow::Borrowed(e.endpoint),
            model: borrow(&e.model),
            stream: e.stream,
            status: e.status,
            outcome: Cow::Borrowed(e.outcome),
            reason: borrow(&e.reason),
            latency_us: e.latency_us,
            upstream_us: e.upstream_us,
            detail: borrow(&e.detail),
            country: borrow(&e.country),
            content_sha256: borrow(&e.content_sha256),
            content_len: e.content_len,
            excerpt: borrow(&e.excerpt),
        }
    }

    fn into_record(self) -> EventRecord {
        EventRecord {
            request_id: self.request_id.into_owned(),
            at_ms: self.at_ms,
            kind: intern(&self.kind),
            key_name: own(self.key_name),
            end_user: own(self.end_user),
            safety_identifier: own(self.safety_identifier),
            client_ip: own(self.client_ip),
            endpoint: intern(&self.endpoint),
            model: own(self.model),
            stream: self.stream,
            status: self.status,
            outcome: intern(&self.outcome),
            reason: own(self.reason),
            latency_us: self.latency_us,
            upstream_us: self.upstream_us,
            detail: own(self.detail),
            country: own(self.country),
            content_sha256: own(self.content_sha256),
            content_len: self.content_len,
            excerpt: own(self.excerpt),
            chain_seq: Some(self.seq),
            spooled: true,
            ..EventRecord::default()
        }
    }
}

/// The record's labels are `&'static str`; a replayed line gets the same static text back.
/// The set of labels is small and fixed by the code, so the few leaked strings are bounded.
fn intern(text: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let mut seen = match seen.lock() {
        Ok(seen) => seen,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(known) = seen.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

impl Spool {
    /// Opens a slot of the spool directory for a new chain: `<dir>/<n>`, the first one no
    /// other process holds (a lock file), so replicas on one host may share `dir`.
    /// Segments earlier processes left in the slot stay for replay (`leftover_chains`).
    pub fn open(dir: &Path, max_bytes: u64, chain_id: String) -> std::io::Result<Spool> {
        const SLOTS: usize = 64;
        for slot in 0..SLOTS {
            let path = dir.join(slot.to_string());
            std::fs::create_dir_all(&path)?;
            let lock = File::create(path.join("lock"))?;
            // Held for the process's life: another process would take this one's live
            // segments for leftovers and replay them a second time.
            if lock.try_lock().is_ok() {
                return Spool::in_slot(path, lock, max_bytes, chain_id);
            }
        }
        Err(std::io::Error::other(format!(
            "all {SLOTS} slots are in use by other Warden processes"
        )))
    }

    fn in_slot(
        dir: PathBuf,
        lock: File,
        max_bytes: u64,
        chain_id: String,
    ) -> std::io::Result<Spool> {
        let spool = Spool {
            _lock: lock,
            dir,
            chain_id,
            max_bytes,
            open: Mutex::new(Open::default()),
            bytes: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            full: AtomicBool::new(false),
            alerts: OnceLock::new(),
        };
        let existing: u64 = spool
            .segments_all()?
            .iter()
            .filter_map(|(_, _, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum();
        spool.bytes.store(existing, Ordering::Relaxed);
        Ok(spool)
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Alerts go out once the alerts module is running (it starts after the event log).
    pub fn connect_alerts(&self, alerts: Alerts) {
        let _ = self.alerts.set(alerts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends one event as number `seq` of this chain. The caller holds the sequence
    /// order (appends happen in `seq` order). Returns the segment file so the caller can
    /// `fsync` outside the lock.
    pub fn append(&self, seq: i64, event: &EventRecord) -> Result<Arc<File>, SpoolError> {
        let mut line = serde_json::to_vec(&Line::of(seq, event))
            .map_err(|e| SpoolError::Io(std::io::Error::other(e)))?;
        line.push(b'\n');
        let len = line.len() as u64;
        let total = self.bytes.load(Ordering::Relaxed);
        if total + len > self.max_bytes {
            if !self.full.swap(true, Ordering::Relaxed) {
                self.alert_full(total);
            }
            return Err(SpoolError::Full(total));
        }
        let mut open = self.lock();
        if open.file.is_some() && open.segment_bytes + len > SEGMENT_BYTES {
            close_segment(&mut open, &self.dir, &self.chain_id);
        }
        let file = match &open.file {
            Some(file) => file.clone(),
            None => {
                open.segment += 1;
                let path = segment_path(&self.dir, &self.chain_id, open.segment);
                let file = Arc::new(OpenOptions::new().create(true).append(true).open(path)?);
                open.file = Some(file.clone());
                open.segment_bytes = 0;
                file
            }
        };
        (&*file).write_all(&line)?;
        open.segment_bytes += len;
        open.last_seq = seq;
        drop(open);
        let now = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if now * 5 >= self.max_bytes * 4 && !self.warned.swap(true, Ordering::Relaxed) {
            self.raise(
                Severity::Warning,
                "event spool 80% full",
                format!(
                    "The event store has been unreachable long enough that the local spool holds {now} of {} bytes; events will be lost when it is full.",
                    self.max_bytes
                ),
            );
        }
        Ok(file)
    }

    fn alert_full(&self, total: u64) {
        self.raise(
            Severity::Critical,
            "event spool full: events are being lost",
            format!(
                "The local event spool is full ({total} of {} bytes) and the store is not committing; new events are dropped and counted in warden_events_dropped_total.",
                self.max_bytes
            ),
        );
    }

    fn raise(&self, severity: Severity, title: &str, text: String) {
        tracing::error!(dir = %self.dir.display(), "{title}");
        if let Some(alerts) = self.alerts.get() {
            alerts.raise(Alert::new(
                "event_spool",
                format!("event_spool:{}", severity.as_str()),
                severity,
                title,
                text,
                serde_json::json!({ "bytes": self.bytes(), "max_bytes": self.max_bytes }),
            ));
        }
    }

    /// Every event of `chain` committed up to `seq`: deletes the segments wholly behind it.
    pub fn release(&self, chain: &str, seq: i64) {
        let mut freed = 0;
        if chain == self.chain_id {
            let mut open = self.lock();
            if open.file.is_some()
                && open.last_seq <= seq
                && open.segment_bytes >= DRAINED_ROLL_BYTES
            {
                close_segment(&mut open, &self.dir, &self.chain_id);
            }
            open.closed.retain(|(path, bytes, last)| {
                if *last <= seq && std::fs::remove_file(path).is_ok() {
                    freed += bytes;
                    false
                } else {
                    true
                }
            });
        } else if let Ok(segments) = self.segments_of(chain) {
            // A leftover chain is released whole, once replayed to its end.
            for (_, path) in segments {
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if std::fs::remove_file(&path).is_ok() {
                    freed += len;
                }
            }
        }
        let before = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(freed))
            })
            .unwrap_or(0);
        let now = before.saturating_sub(freed);
        if now * 2 < self.max_bytes {
            self.warned.store(false, Ordering::Relaxed);
            self.full.store(false, Ordering::Relaxed);
        }
    }

    /// Chains other processes left in the spool (a crash, or an outage at shutdown),
    /// oldest first.
    pub fn leftover_chains(&self) -> Vec<String> {
        let mut chains: Vec<String> = self
            .segments_all()
            .unwrap_or_default()
            .into_iter()
            .map(|(chain, _, _)| chain)
            .filter(|c| *c != self.chain_id)
            .collect();
        chains.sort();
        chains.dedup();
        chains
    }

    /// Up to `limit` events of `chain` with a sequence number above `after`, in order,
    /// reading on from `cursor`.
    pub fn read(
        &self,
        chain: &str,
        cursor: &mut Cursor,
        after: i64,
        limit: usize,
    ) -> std::io::Result<Vec<EventRecord>> {
        let mut out = Vec::new();
        for (segment, path) in self.segments_of(chain)? {
            if segment < cursor.segment {
                continue;
            }
            if segment > cursor.segment {
                *cursor = Cursor { segment, offset: 0 };
            }
            let Ok(mut file) = File::open(&path) else {
                continue; // released meanwhile
            };
            file.seek(SeekFrom::Start(cursor.offset))?;
            let mut reader = BufReader::new(file);
            let mut text = Vec::new();
            loop {
                if out.len() >= limit {
                    return Ok(out);
                }
                text.clear();
                let n = reader.read_until(b'\n', &mut text)?;
                if n == 0 || text.last() != Some(&b'\n') {
                    break; // end, or a line still being written / cut by a crash
                }
                cursor.offset += n as u64;
                match serde_json::from_slice::<Line>(&text) {
                    Ok(line) if line.seq > after => out.push(line.into_record()),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "event spool: unreadable line skipped"),
                }
            }
        }
        Ok(out)
    }

    fn segments_of(&self, chain: &str) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let mut list: Vec<(u64, PathBuf)> = self
            .segments_all()?
            .into_iter()
            .filter(|(c, _, _)| c == chain)
            .map(|(_, n, p)| (n, p))
            .collect();
        list.sort();
        Ok(list)
    }

    fn segments_all(&self) -> std::io::Result<Vec<(String, u64, PathBuf)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".jsonl") else {
                continue;
            };
            let Some((chain, number)) = stem.rsplit_once('.') else {
                continue;
            };
            if let Ok(number) = number.parse::<u64>() {
                out.push((chain.to_owned(), number, path.clone()));
            }
        }
        Ok(out)
    }
}

fn segment_path(dir: &Path, chain: &str, segment: u64) -> PathBuf {
    dir.join(format!("{chain}.{segment:06}.jsonl"))
}

fn close_segment(open: &mut Open, dir: &Path, chain: &str) {
    if open.file.take().is_some() {
        let path = segment_path(dir, chain, open.segment);
        open.closed.push((path, open.segment_bytes, open.last_seq));
        open.segment_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(id: &str) -> EventRecord {
        EventRecord {
            request_id: id.into(),
            kind: "request",
            endpoint: "chat.completions",
            outcome: "allowed",
            status: 200,
            detail: Some("{\"trail\":[\"a\\nb\"]}".into()),
            ..EventRecord::default()
        }
    }

    #[test]
    fn appended_events_read_back_in_order_and_release_frees_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 30, "c1".into()).unwrap();
        for seq in 1..=1000 {
            spool.append(seq, &event(&format!("r{seq}"))).unwrap();
        }
        let mut cursor = Cursor::default();
        let first = spool.read("c1", &mut cursor, 0, 600).unwrap();
        assert_eq!(first.len(), 600);
        assert_eq!(first[0].request_id, "r1");
        assert_eq!(first[0].chain_seq, Some(1));
        assert_eq!(first[0].detail.as_deref(), Some("{\"trail\":[\"a\\nb\"]}"));
        let rest = spool.read("c1", &mut cursor, 600, 600).unwrap();
        assert_eq!(rest.len(), 400);
        assert_eq!(rest[399].request_id, "r1000");
        // A fresh cursor skips what is already committed.
        let tail = spool.read("c1", &mut Cursor::default(), 990, 600).unwrap();
        assert_eq!(tail.len(), 10);
        assert!(spool.bytes() > 0);
    }

    #[test]
    fn a_full_spool_refuses_and_a_cut_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 600, "c1".into()).unwrap();
        let mut kept = 0;
        for seq in 1..=10 {
            if spool.append(seq, &event("r")).is_ok() {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept < 10, "kept {kept}");
        // A crash mid-write leaves half a line: replay stops before it.
        let path = segment_path(spool.dir(), "c1", 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":99,\"request_id\"").unwrap();
        let read = spool.read("c1", &mut Cursor::default(), 0, 100).unwrap();
        assert_eq!(read.len(), kept);
    }

    #[test]
    fn segments_of_an_earlier_process_are_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let old = Spool::open(dir.path(), 1 << 20, "c0".into()).unwrap();
        old.append(1, &event("old")).unwrap();
        // A second process at the same time gets a slot of its own.
        let other = Spool::open(dir.path(), 1 << 20, "c9".into()).unwrap();
        assert!(other.leftover_chains().is_empty());
        assert_ne!(other.dir(), old.dir());
        drop((old, other));
        let new = Spool::open(dir.path(), 1 << 20, "c1".into()).unwrap();
        assert_eq!(new.leftover_chains(), ["c0"]);
        let read = new.read("c0", &mut Cursor::default(), 0, 10).unwrap();
        assert_eq!(read[0].request_id, "old");
        new.release("c0", 1);
        assert!(new.leftover_chains().is_empty());
        assert_eq!(new.bytes(), 0);
    }
}
