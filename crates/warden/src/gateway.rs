//! Everything a running gateway holds: the long-lived services, assembled once, and the
//! current config snapshot (`reload::Snapshot`), which a reload replaces whole.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, Problems, Secrets};
use crate::enforcement::Enforcement;
use crate::events::{EventLog, EventOptions, EventSink, LogSink, Metrics, StoreSink};
use crate::identity::jwt::JwtVerifier;
use crate::identity::safety_id::SafetyIdentifiers;
use crate::keys::{hash_secret, DeclaredKey, KeyOrigin, VirtualKey};
use crate::proxy::headers::bearer;
use crate::proxy::observe::ObserverFactory;
use crate::proxy::upstream::Upstream;
use crate::reload::{Live, Reloads, Snapshot};
use crate::safety::moderation::client::UpstreamBackend;
use crate::safety::moderation::Moderator;
use crate::secret::Secret;
use crate::store::Store;

const SAFETY_SECRET_SETTING: &str = "safety_identifier_secret";
const KEY_REFRESH: Duration = Duration::from_secs(1);

pub struct Gateway {
    /// The per-config parts (pipeline, keys, moderation policy, admin tokens, trusted
    /// proxies): read through `snapshot()`, replaced whole by a reload.
    current: Arc<ArcSwap<Snapshot>>,
    /// Config reload state: the file, its digest, counts.
    pub reloads: Reloads,
    /// Prometheus counters fed by the event log.
    pub metrics: Metrics,
    pub upstream: Arc<Upstream>,
    /// Rate, token and concurrency limits (shared through Redis when configured).
    pub limiter: crate::limits::Limiter,
    pub events: EventLog,
    pub safety_ids: Arc<SafetyIdentifiers>,
    pub store: Store,
    /// OpenAI's safety webhooks: receiver state and the case worker.
    pub notices: Arc<crate::notices::Notices>,
    /// The vault's master key, when configured (upstream keys sealed in the store).
    pub vault: Option<Arc<crate::vault::MasterKey>>,
    /// End-user strikes, suspensions and bans.
    pub enforcement: Arc<Enforcement>,
    /// Spend per organization, key and end user, against their budgets.
    pub spend: crate::spend::Spend,
    /// Response watchers, in the order they see frames.
    pub observers: Vec<Box<dyn ObserverFactory>>,
    /// Live abuse detection and the account risk score.
    pub abuse: crate::abuse::Abuse,
    /// Webhook alerts; anything may `raise` one without waiting.
    pub alerts: crate::alerts::Alerts,
    /// Lockdown mode: `is_on()` is one atomic load.
    pub lockdown: crate::lockdown::Lockdown,
    /// The countries each key is used from; a new one raises a leak alert.
    pub key_countries: Arc<crate::keys::countries::KeyCountries>,
    /// Failed admin and webhook authentication per client address.
    pub auth_failures: Arc<crate::admin_api::guessing::AuthFailures>,
    /// Whether the start-up reads from the store are done (false only after a start
    /// while the store was down, until it answers).
    pub store_loaded: Arc<crate::startup::StoreLoaded>,
    /// `[storage] ready_without_store`.
    pub ready_without_store: bool,
    /// Upstream key hygiene: rotation, leak reconciliation, unmanaged keys, real spend.
    pub hygiene: Arc<crate::hygiene::Hygiene>,
    /// Open Realtime sessions and per-user session counts (`[realtime]`).
    pub realtime: Arc<crate::realtime::Sessions>,
}

impl Gateway {
    /// Builds the gateway; every config or secret problem is reported at once.
    pub async fn build(
        config: &Config,
        secrets: &Secrets,
        store: Store,
    ) -> anyhow::Result<Gateway> {
        Gateway::build_opened(config, secrets, crate::store::Opened::Ready(store)).await
    }

    /// Builds the gateway on a store that may not answer yet (`Opened::Waiting`): then
    /// nothing is read from it now; `startup::Pending` reads it once it answers.
    pub async fn build_opened(
        config: &Config,
        secrets: &Secrets,
        opened: crate::store::Opened,
    ) -> anyhow::Result<Gateway> {
        let (store, waiting) = match opened {
            crate::store::Opened::Ready(store) => (store, false),
            crate::store::Opened::Waiting(store) => (store, true),
        };
        let safety_ids = match (waiting, secrets.safety_identifier.as_ref()) {
            (true, Some(secret)) => Arc::new(SafetyIdentifiers::new(secret)),
            (true, None) => Arc::new(SafetyIdentifiers::pending()),
            (false, configured) => safety_identifiers(configured, &store).await?,
        };

        let metrics = Metrics::default();
        let (offence_sink, offences) = crate::enforcement::offence_channel(&config.enforcement);
        let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(LogSink), Box::new(metrics.clone())];
        let mut event_options = EventOptions::from_config(&config.events)?;
        if config.events.store {
            event_options.spool = open_spool(config)?;
            let sink = match &event_options.spool {
                Some(spool) => StoreSink::spooled(
                    store.clone(),
                    config.events.excerpt_retention,
                    spool.clone(),
                    event_options.dropped.clone(),
                    event_options.store_down.clone(),
                ),
                None => StoreSink::new(store.clone(), config.events.excerpt_retention),
            };
            sinks.push(Box::new(sink));
            crate::events::sweeper::spawn(store.clone(), config.events.clone());
        }
        sinks.push(Box::new(offence_sink));
        let spool = event_options.spool.clone();
        let events = EventLog::start_with(sinks, event_options);
        let enforcement = Enforcement::new(
            config.enforcement.clone(),
            store.clone(),
            events.clone(),
            safety_ids.clone(),
            offences,
        );
        if waiting {
            enforcement.start_without_store();
        } else {
            enforcement.start().await?;
        }
        let upstream = Arc::new(Upstream::new(
            &config.upstream,
            secrets.upstream_default.as_ref(),
        )?);
        let vault = secrets
            .master_key
            .as_ref()
            .and_then(|k| crate::vault::MasterKey::parse(k.expose()))
            .map(Arc::new);
        match vault.clone() {
            // Opened once the store answers (`startup::Pending`).
            Some(_) if waiting => {}
            None if waiting => {}
            Some(master) => {
                crate::vault::unlock(&store, &master).await.map_err(|err| {
                    anyhow::anyhow!(
                        "upstream.master_key_env ({}): {err}",
                        config.upstream.master_key_env
                    )
                })?;
                let fallback = (*upstream.defaults()).clone();
                crate::vault::serve_active(store.clone(), master, upstream.clone(), fallback)
                    .await?;
            }
            None => {
                if store.active_upstream_key().await?.is_some() {
                    tracing::warn!(
                        "the store holds an active upstream key but {} is not set: using the environment/file key",
                        config.upstream.master_key_env
                    );
                }
            }
        }
        let moderator = Arc::new(Moderator::new(
            config.safety.moderation.clone(),
            Arc::new(UpstreamBackend {
                upstream: upstream.clone(),
            }),
        ));
        let notices = crate::notices::Notices::new(
            config.notices.clone(),
            secrets.notice_secret.as_ref(),
            secrets.case_key.as_ref(),
            store.clone(),
            upstream.clone(),
            enforcement.clone(),
            events.clone(),
        );
        notices.spawn_worker();
        let limiter = crate::limits::Limiter::new(&config.limits, &config.cluster)?;
        limiter.spawn_sweeper();
        let alerts = crate::alerts::Alerts::start(&config.alerts)?;
        enforcement.connect_alerts(alerts.clone());
        if let Some(spool) = &spool {
            spool.connect_alerts(alerts.clone());
        }
        let key_countries = if waiting {
            crate::keys::countries::KeyCountries::start_without_store(
                store.clone(),
                alerts.clone(),
                events.clone(),
            )
        } else {
            crate::keys::countries::KeyCountries::start(
                store.clone(),
                alerts.clone(),
                events.clone(),
            )
            .await?
        };
        let auth_failures = Arc::new(crate::admin_api::guessing::AuthFailures::default());
        auth_failures.spawn_flusher(events.clone());
        let lockdown = crate::lockdown::Lockdown::new(config.lockdown.clone());
        // The state is read once before serving, so a restart during lockdown stays locked.
        // Without the store the poller applies it within a second of its return.
        if !waiting {
            lockdown.apply(crate::lockdown::load(&store).await?, &limiter, &|| {
                moderator.clone()
            });
        }
        let abuse = crate::abuse::Abuse::start(
            config.abuse.clone(),
            alerts.clone(),
            lockdown.clone(),
            store.clone(),
        );
        spawn_enforcement_totals(abuse.clone(), store.clone());
        let spend = if waiting {
            crate::spend::Spend::start_without_store(config.spend.clone(), store.clone())
        } else {
            crate::spend::Spend::start(config.spend.clone(), store.clone()).await?
        };
        if spend.enabled() {
            spend.spawn_flusher();
        }
        let live = Live {
            enforcement: enforcement.clone(),
            safety_ids: safety_ids.clone(),
            limiter: limiter.clone(),
            lockdown: lockdown.clone(),
            abuse: abuse.clone(),
            spend: spend.clone(),
            store: store.clone(),
        };
        let snapshot = Snapshot::build(
            config,
            secrets,
            live,
            moderator,
            // Without the store, config keys serve; the key refresh adds the stored ones.
            &if waiting {
                Vec::new()
            } else {
                store.list_keys().await?
            },
            1,
        )
        .map_err(|p| anyhow::anyhow!("{p}"))?;
        let current = Arc::new(ArcSwap::from_pointee(snapshot));
        let hygiene = start_hygiene(config, secrets, &store, vault.clone(), &alerts, &events)?;
        let mut observers: Vec<Box<dyn ObserverFactory>> =
            vec![Box::new(crate::proxy::settle::UsageSettlement {
                spend: spend.clone(),
                abuse: abuse.clone(),
            })];
        if hygiene.enabled() {
            observers.push(Box::new(crate::hygiene::ledger::CountSent(
                hygiene.ledger.clone(),
            )));
        }
        // The poller reaches whichever moderator the config of the moment has.
        lockdown.spawn_poller(store.clone(), limiter.clone(), {
            let current = current.clone();
            move || current.load().moderator.clone()
        });
        let store_loaded = Arc::new(if waiting {
            crate::startup::StoreLoaded::default()
        } else {
            crate::startup::StoreLoaded::done()
        });
        if waiting {
            crate::startup::Pending {
                store: store.clone(),
                loaded: store_loaded.clone(),
                safety_ids: safety_ids.clone(),
                vault: vault
                    .clone()
                    .map(|master| (master, config.upstream.master_key_env.clone())),
                upstream: upstream.clone(),
                key_countries: key_countries.clone(),
                spend: spend.clone(),
                alerts: alerts.clone(),
            }
            .spawn();
        }
        Ok(Gateway {
            current,
            reloads: Reloads::new(config.clone()),
            metrics,
            upstream,
            limiter,
            events,
            safety_ids,
            store,
            enforcement,
            notices,
            vault,
            observers,
            abuse,
            alerts,
            lockdown,
            spend,
            key_countries,
            auth_failures,
            store_loaded,
            ready_without_store: config.ready_without_store,
            hygiene,
            realtime: Arc::new(crate::realtime::Sessions::new(config.realtime.clone())),
        })
    }

    /// The config snapshot serving new requests. A request takes it once, at its start.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Serves new requests with `snapshot`; requests already running keep theirs.
    pub fn install(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The long-lived services a new snapshot's stages are built on.
    pub fn live(&self) -> Live {
        Live {
            enforcement: self.enforcement.clone(),
            safety_ids: self.safety_ids.clone(),
            limiter: self.limiter.clone(),
            lockdown: self.lockdown.clone(),
            abuse: self.abuse.clone(),
            spend: self.spend.clone(),
            store: self.store.clone(),
        }
    }

    /// Upstream gauges and counters kept outside the event log: retries, breaker state.
    pub fn upstream_metrics(&self) -> String {
        crate::proxy::metrics::render(&self.upstream)
    }

    /// Keeps the key table in step with the store, so `warden keys create|revoke` on any
    /// machine takes effect here within a second.
    pub fn spawn_key_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gateway = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                match gateway.store.list_keys().await {
                    Ok(stored) => gateway.snapshot().keys.replace_stored(&stored),
                    Err(err) => {
                        tracing::warn!(%err, "could not refresh virtual keys; keeping the last known set")
                    }
                }
            }
        })
    }
}

/// Key hygiene over every upstream key Warden holds: the vault's, the environment or
/// file key (`(env)`) and virtual keys' own (`(key:NAME)`).
fn start_hygiene(
    config: &Config,
    secrets: &Secrets,
    store: &Store,
    vault: Option<Arc<crate::vault::MasterKey>>,
    alerts: &crate::alerts::Alerts,
    events: &EventLog,
) -> anyhow::Result<Arc<crate::hygiene::Hygiene>> {
    let mut held: crate::hygiene::HeldOutsideVault = Vec::new();
    if let Some(secret) = &secrets.upstream_default {
        held.push(("(env)".into(), secret.clone()));
    }
    for (key, secret) in config.keys.iter().zip(&secrets.keys) {
        if let Some(secret) = &secret.upstream {
            held.push((format!("(key:{})", key.name), secret.clone()));
        }
    }
    let mut hygiene = crate::hygiene::Hygiene::new(
        config.openai_admin.clone(),
        secrets.openai_admin_key.as_ref(),
        &config.upstream.base_url,
        store.clone(),
        vault,
        held,
    )?;
    hygiene.connect(alerts.clone(), events.clone());
    let hygiene = Arc::new(hygiene);
    hygiene.spawn();
    Ok(hygiene)
}

/// Feeds the risk score the strike and sanction totals every few seconds.
fn spawn_enforcement_totals(abuse: crate::abuse::Abuse, store: Store) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.enforcement_totals(crate::events::now_ms()).await {
                Ok((strikes_24h, suspended, banned_7d)) => {
                    abuse.set_enforcement(crate::abuse::risk::Enforcement {
                        strikes_24h,
                        suspended,
                        banned_7d,
                    })
                }
                Err(err) => tracing::warn!(%err, "could not count strikes for the risk score"),
            }
        }
    });
}

/// The identifier hasher: the configured secret, or the one generated once and kept in
/// the store so identifiers stay stable across restarts and replicas.
pub async fn safety_identifiers(
    configured: Option<&Secret>,
    store: &Store,
) -> anyhow::Result<Arc<SafetyIdentifiers>> {
    let secret = match configured {
        Some(secret) => secret.clone(),
        None => stored_safety_secret(store).await?,
    };
    Ok(Arc::new(SafetyIdentifiers::new(&secret)))
}

/// The generated identifier secret kept in the store (made on first use).
pub(crate) async fn stored_safety_secret(store: &Store) -> anyhow::Result<Secret> {
    Ok(Secret::new(
        store
            .setting_or_insert(
                SAFETY_SECRET_SETTING,
                crate::keys::generate_secret()?.expose(),
            )
            .await?,
    ))
}

/// The config's `[[keys]]` with their secrets; part of every config snapshot.
pub(crate) fn declared_keys(
    config: &Config,
    secrets: &Secrets,
) -> Result<Vec<DeclaredKey>, Problems> {
    let mut problems = Problems::default();
    let mut keys = Vec::with_capacity(config.keys.len());
    for (i, (key, secret)) in config.keys.iter().zip(&secrets.keys).enumerate() {
        let jwt = match (&key.jwt, &secret.jwt) {
            (Some(jwt), Some(material)) => match JwtVerifier::new(jwt, material) {
                Ok(verifier) => Some(Arc::new(verifier)),
                Err(why) => {
                    problems.push(format!("keys[{i}].jwt"), why);
                    None
                }
            },
            _ => None,
        };
        keys.push((
            secret
                .client_secret
                .as_ref()
                .map(|s| hash_secret(s.expose())),
            Arc::new(VirtualKey {
                name: key.name.clone(),
                origin: KeyOrigin::Config,
                end_user: key.end_user,
                trusted_user_field: key.trusted_user_field,
                jwt,
                upstream_key: secret.upstream.as_ref().and_then(|s| bearer(s.expose())),
                openai_project: key.openai_project.as_deref().and_then(|p| p.parse().ok()),
                scope: None,
                shared_objects: key.shared_objects,
            }),
        ));
    }
    problems.into_result(keys)
}

/// The event spool (`[events] spool*`): off for an in-memory store unless a directory
/// is named, since such a store does not outlive the process either.
fn open_spool(config: &Config) -> anyhow::Result<Option<Arc<crate::events::spool::Spool>>> {
    use crate::config::StorageConfig;
    let events = &config.events;
    if !events.spool {
        return Ok(None);
    }
    let dir = match (&events.spool_dir, &config.storage) {
        (Some(dir), _) => dir.clone(),
        (None, StorageConfig::Sqlite { path }) => path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| "spool".into(), |d| d.join("spool")),
        // Named after the database (not its credentials), so a spool is never replayed
        // into another database.
        (None, StorageConfig::Postgres { url }) => {
            let place = url
                .rsplit_once('@')
                .map_or(url.as_str(), |(_, place)| place);
            let digest = ring::digest::digest(&ring::digest::SHA256, place.as_bytes());
            let hex = crate::events::content::hex(digest.as_ref());
            std::path::Path::new("warden-data/spool").join(&hex[..12])
        }
        (None, StorageConfig::SqliteMemory) => return Ok(None),
    };
    let spool = crate::events::spool::Spool::open(
        &dir,
        events.spool_max_bytes,
        crate::events::chain::new_chain_id(),
    )
    .map_err(|err| anyhow::anyhow!("events.spool_dir ({}): {err}", dir.display()))?;
    Ok(Some(Arc::new(spool)))
}
