//! Leak response: the countries each virtual key is used from. The first request from a
//! country a key with a history has never been used from raises a `key_new_country`
//! alert and records an `alert` event; a new key's first country is just remembered.
//!
//! The request path only reads a sharded in-memory set (no allocation when the country
//! is known). A new (key, country) pair is queued to a background task that stores it
//! in `key_countries`; the insert that actually adds the row decides, so replicas
//! sharing the store raise one alert between them, and a restart remembers.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use smallvec::SmallVec;
use tokio::sync::mpsc;

use crate::alerts::{Alert, Alerts, Severity};
use crate::events::{now_ms, EventLog, EventRecord};
use crate::geo::Country;
use crate::store::Store;

/// New pairs are rare (a few per key, ever): a small queue is plenty, and a full one
/// forgets the pair so a later request tries again.
const QUEUE: usize = 1024;

struct Sighting {
    key: String,
    country: Country,
    client_ip: IpAddr,
    request_id: String,
    at_ms: i64,
}

pub struct KeyCountries {
    known: DashMap<String, SmallVec<[Country; 4]>>,
    tx: mpsc::Sender<Sighting>,
    dropped: AtomicU64,
}

impl KeyCountries {
    /// Loads what the store knows and starts the background writer.
    pub async fn start(
        store: Store,
        alerts: Alerts,
        events: EventLog,
    ) -> anyhow::Result<Arc<KeyCountries>> {
        let tracker = KeyCountries::start_without_store(store.clone(), alerts, events);
        tracker.load(&store).await?;
        Ok(tracker)
    }

    /// Starts the writer knowing no country yet. Harmless while the store is down: the
    /// store decides what is new (`add_key_country`), so nothing raises a false alert;
    /// the known set only saves writes.
    pub fn start_without_store(
        store: Store,
        alerts: Alerts,
        events: EventLog,
    ) -> Arc<KeyCountries> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let tracker = Arc::new(KeyCountries {
            known: DashMap::new(),
            tx,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(run(Arc::downgrade(&tracker), rx, store, alerts, events));
        tracker
    }

    /// Adds what the store knows to what this process has seen.
    pub async fn load(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        for row in store.key_countries().await? {
            if let Some(country) = Country::parse(&row.country) {
                let mut seen = self.known.entry(row.key_name).or_default();
                if !seen.contains(&country) {
                    seen.push(country);
                }
            }
        }
        Ok(())
    }

    /// A request authenticated as `key` came from `country`.
    pub fn observe(&self, key: &str, country: Country, client_ip: IpAddr, request_id: &str) {
        if self
            .known
            .get(key)
            .is_some_and(|seen| seen.contains(&country))
        {
            return;
        }
        {
            let mut seen = self.known.entry(key.to_owned()).or_default();
            if seen.contains(&country) {
                return;
            }
            seen.push(country);
        }
        let queued = self.tx.try_send(Sighting {
            key: key.to_owned(),
            country,
            client_ip,
            request_id: request_id.to_owned(),
            at_ms: now_ms(),
        });
        if queued.is_err() {
            self.forget(key, country);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forget(&self, key: &str, country: Country) {
        if let Some(mut seen) = self.known.get_mut(key) {
            seen.retain(|c| *c != country);
        }
    }
}

async fn run(
    tracker: std::sync::Weak<KeyCountries>,
    mut rx: mpsc::Receiver<Sighting>,
    store: Store,
    alerts: Alerts,
    events: EventLog,
) {
    while let Some(sighting) = rx.recv().await {
        let mut delay = Duration::from_millis(100);
        let stored = loop {
            match store
                .add_key_country(&sighting.key, sighting.country.as_str(), sighting.at_ms)
                .await
            {
                Ok(stored) => break Some(stored),
                Err(err) if delay < Duration::from_secs(2) => {
                    tracing::warn!(%err, "could not store a key's country; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(err) => {
                    tracing::error!(%err, key = %sighting.key, "could not store a key's country; a later request tries again");
                    break None;
                }
            }
        };
        match stored {
            // Another replica (or an earlier run) stored it first, or this is the key's
            // very first country: nothing to say.
            Some(None) => {}
            Some(Some(earlier)) if earlier.is_empty() => {}
            Some(Some(earlier)) => raise(&alerts, &events, &sighting, &earlier),
            None => {
                if let Some(tracker) = tracker.upgrade() {
                    tracker.forget(&sighting.key, sighting.country);
                }
            }
        }
    }
}

fn raise(alerts: &Alerts, events: &EventLog, s: &Sighting, earlier: &[String]) {
    let (key, country, ip) = (&s.key, s.country.as_str(), s.client_ip.to_string());
    let before = earlier.join(", ");
    alerts.raise(Alert::new(
        "key_new_country",
        format!("key-country:{key}:{country}"),
        Severity::Warning,
        format!("Virtual key '{key}' used from a new country: {country}"),
        format!("The key '{key}' was used from {country} (client {ip}) for the first time; before, only from {before}. If nobody using it is there, the key has probably leaked: rotate it (`warden keys rotate {key}`) or revoke it."),
        serde_json::json!({
            "key": key, "country": country, "client_ip": ip,
            "request_id": s.request_id, "earlier_countries": earlier,
        }),
    ));
    events.record(EventRecord {
        request_id: s.request_id.clone(),
        at_ms: now_ms(),
        kind: "alert",
        key_name: Some(key.clone()),
        client_ip: Some(ip),
        country: Some(country.to_owned()),
        endpoint: "",
        outcome: "flagged",
        reason: Some("key_new_country".into()),
        detail: Some(serde_json::json!({ "earlier_countries": earlier }).to_string()),
        ..Default::default()
    });
}
