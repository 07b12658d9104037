//! The open-loop generator: request i of a segment leaves at t0 + i/R whatever happened to the
//! earlier ones, and its latency counts from that scheduled instant (no coordinated omission).

use crate::pool::Pool;
use crate::tally::{Failure, Outcome, Timings};
use crate::workload::Target;
use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How far ahead of the first send the schedule starts, so the first request is not late.
const LEAD: Duration = Duration::from_millis(5);

/// One target with its connections and the body it is sent.
#[derive(Debug)]
pub struct Load {
    pub target: Arc<Target>,
    pub pool: Arc<Pool>,
    pub body: Bytes,
}

/// A stretch of constant-rate traffic to one target.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub rate: f64,
    pub duration: Duration,
    /// A request still unanswered this long after its scheduled time counts as a timeout.
    pub timeout: Duration,
    /// Number of the segment's first request (end users rotate with it).
    pub first_index: u64,
}

impl Segment {
    pub fn requests(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round() as u64
    }
}

/// What one segment produced.
#[derive(Debug)]
pub struct SegmentRun {
    pub outcomes: Vec<Outcome>,
    /// First scheduled send to the last completion.
    pub wall: Duration,
}

/// Runs one segment. The schedule is kept by a dedicated OS thread (tokio's timer ticks in
/// whole milliseconds, too coarse at 2,000 requests/s); it spawns each request onto `runtime`
/// at its instant, so the generator's own lateness shows up in the latency it reports.
pub async fn run(
    runtime: &Handle,
    load: &Arc<Load>,
    segment: Segment,
) -> anyhow::Result<SegmentRun> {
    anyhow::ensure!(segment.rate > 0.0, "rate must be positive");
    let count = segment.requests();
    let interval = 1e9 / segment.rate;
    let start = Instant::now() + LEAD;
    let (done, handles) = oneshot::channel();
    let runtime = runtime.clone();
    let load = Arc::clone(load);
    std::thread::Builder::new()
        .name("bench-scheduler".into())
        .spawn(move || {
            let mut spawned = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for i in 0..count {
                let at = start + Duration::from_nanos((i as f64 * interval) as u64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let load = Arc::clone(&load);
                let n = segment.first_index + i;
                spawned
                    .push(runtime.spawn(async move { shoot(&load, n, at, segment.timeout).await }));
            }
            let _ = done.send(spawned);
        })
        .context("starting the scheduler thread")?;
    let spawned = handles.await.context("the scheduler thread died")?;
    let mut outcomes = Vec::with_capacity(spawned.len());
    for handle in spawned {
        outcomes.push(handle.await.unwrap_or(Outcome::Failed(Failure::Lost)));
    }
    Ok(SegmentRun {
        outcomes,
        wall: start.elapsed(),
    })
}

async fn shoot(load: &Load, n: u64, scheduled: Instant, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::from_std(scheduled + timeout);
    match tokio::time::timeout_at(deadline, exchange(load, n, scheduled)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(Failure::Timeout),
    }
}

/// One request on a pooled connection; the body is read to the end but not kept.
async fn exchange(load: &Load, n: u64, scheduled: Instant) -> Outcome {
    let Ok(mut lease) = load.pool.checkout().await else {
        return Outcome::Failed(Failure::Connect);
    };
    let request = load.target.request(n, &load.body);
    let sent = Instant::now();
    let Ok(response) = lease.sender().send_request(request).await else {
        return Outcome::Failed(Failure::Send);
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) if frame.is_data() && first_byte.is_none() => {
                first_byte = Some(Instant::now())
            }
            Ok(_) => {}
            Err(_) => return Outcome::Failed(Failure::Body),
        }
    }
    let finished = Instant::now();
    lease.release();
    if status != StatusCode::OK {
        return Outcome::Failed(Failure::Status(status.as_u16()));
    }
    Outcome::Ok(Timings {
        latency: finished - scheduled,
        first_byte: first_byte.unwrap_or(finished) - scheduled,
        service: finished - sent,
        queued: sent.saturating_duration_since(scheduled),
    })
}

/// What a closed-loop run produced.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClosedRun {
    pub ok: u64,
    pub failed: u64,
    pub wall: Duration,
}

impl ClosedRun {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The most a target serves: `clients` each send the next request the moment the last
/// answer ended, for `duration` (the throughput ceiling, not a latency measurement).
pub async fn closed_loop(load: &Arc<Load>, clients: usize, duration: Duration) -> ClosedRun {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let load = Arc::clone(load);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut n = client as u64;
                while Instant::now() < deadline {
                    match exchange(&load, n, Instant::now()).await {
                        Outcome::Ok(_) => ok += 1,
                        Outcome::Failed(_) => failed += 1,
                    }
                    n += clients as u64;
                }
                (ok, failed)
            })
        })
        .collect();
    let mut run = ClosedRun::default();
    for task in tasks {
        let (ok, failed) = task.await.unwrap_or((0, 1));
        run.ok += ok;
        run.failed += failed;
    }
    run.wall = started.elapsed();
    run
}

/// One request before any load: the target must answer 200 with a well-formed chat reply,
/// otherwise the run stops here with what came back.
pub async fn probe(load: &Load, stream: bool) -> anyhow::Result<()> {
    let side = load.target.side.name();
    let mut lease = load.pool.checkout().await?;
    let response = lease
        .sender()
        .send_request(load.target.request(0, &load.body))
        .await
        .with_context(|| format!("probe request to {side}"))?;
    let status = response.status();
    let mut body = BytesMut::new();
    let mut incoming = response.into_body();
    while let Some(frame) = incoming.frame().await {
        if let Ok(data) = frame
            .with_context(|| format!("reading the {side} probe reply"))?
            .into_data()
        {
            body.extend_from_slice(&data);
        }
    }
    lease.release();
    let text = String::from_utf8_lossy(&body);
    let excerpt: String = text.chars().take(400).collect();
    anyhow::ensure!(
        status == StatusCode::OK,
        "{side} probe: status {status}: {excerpt}"
    );
    let well_formed = if stream {
        text.contains("\"chat.completion.chunk\"") && text.trim_end().ends_with("data: [DONE]")
    } else {
        serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v["object"] == "chat.completion")
    };
    anyhow::ensure!(
        well_formed,
        "{side} probe: not a chat completion: {excerpt}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_schedules_rate_times_seconds_requests() {
        let segment = Segment {
            rate: 2000.0,
            duration: Duration::from_millis(2500),
            timeout: Duration::from_secs(1),
            first_index: 0,
        };
        assert_eq!(segment.requests(), 5000);
    }
}
