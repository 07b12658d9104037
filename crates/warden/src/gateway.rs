//! Everything a running gateway holds, assembled once from the config and its secrets.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, Problems, Secrets};
use crate::enforcement::Enforcement;
use crate::events::{EventLog, EventOptions, EventSink, LogSink, Metrics, StoreSink};
use crate::identity::jwt::JwtVerifier;
use crate::identity::safety_id::SafetyIdentifiers;
use crate::keys::{hash_secret, DeclaredKey, KeyOrigin, KeyRegistry, VirtualKey};
use crate::pipeline::{Pipeline, StageDeps};
use crate::proxy::headers::bearer;
use crate::proxy::observe::ObserverFactory;
use crate::proxy::upstream::Upstream;
use crate::safety::moderation::client::UpstreamBackend;
use crate::safety::moderation::Moderator;
use crate::secret::Secret;
use crate::store::Store;

const SAFETY_SECRET_SETTING: &str = "safety_identifier_secret";
const KEY_REFRESH: Duration = Duration::from_secs(1);

pub struct Gateway {
    /// Prometheus counters fed by the event log.
    pub metrics: Metrics,
    pub pipeline: Pipeline,
    pub upstream: Arc<Upstream>,
    /// Input and output moderation (the Moderation endpoint, its cache and breaker).
    pub moderator: Arc<Moderator>,
    /// The local filters' scanner for each key (input stage and output checks).
    pub filters: Arc<crate::safety::profiles::KeyFilters>,
    /// Rate, token and concurrency limits (shared through Redis when configured).
    pub limiter: crate::limits::Limiter,
    pub events: EventLog,
    pub keys: Arc<KeyRegistry>,
    pub store: Store,
    /// OpenAI's safety webhooks: receiver state and the case worker.
    pub notices: Arc<crate::notices::Notices>,
    /// The vault's master key, when configured (upstream keys sealed in the store).
    pub vault: Option<Arc<crate::vault::MasterKey>>,
    /// Digests of the tokens the admin API accepts.
    pub admin_tokens: crate::admin_api::AdminTokens,
    /// End-user strikes, suspensions and bans.
    pub enforcement: Arc<Enforcement>,
    pub trusted_proxies: Vec<IpNet>,
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
}

impl Gateway {
    /// Builds the gateway; every config or secret problem is reported at once.
    pub async fn build(
        config: &Config,
        secrets: &Secrets,
        store: Store,
    ) -> anyhow::Result<Gateway> {
        let declared = declared_keys(config, secrets).map_err(|p| anyhow::anyhow!("{p}"))?;
        let keys = Arc::new(KeyRegistry::new(declared));
        keys.replace_stored(&store.list_keys().await?);

        let safety_ids = safety_identifiers(secrets.safety_identifier.as_ref(), &store).await?;

        let metrics = Metrics::default();
        let (offence_sink, offences) = crate::enforcement::offence_channel(&config.enforcement);
        let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(LogSink), Box::new(metrics.clone())];
        if config.events.store {
            sinks.push(Box::new(StoreSink::new(
                store.clone(),
                config.events.excerpt_retention,
            )));
            crate::events::sweeper::spawn(store.clone(), config.events.clone());
        }
        sinks.push(Box::new(offence_sink));
        let events = EventLog::start_with(sinks, EventOptions::from_config(&config.events)?);
        let enforcement = Enforcement::new(
            config.enforcement.clone(),
            store.clone(),
            events.clone(),
            safety_ids.clone(),
            offences,
        );
        enforcement.start().await?;
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
        let geo = match &config.geo.database {
            Some(path) => Some(Arc::new(crate::geo::GeoDb::open(path)?)),
            None => None,
        };
        let alerts = crate::alerts::Alerts::start(&config.alerts)?;
        enforcement.connect_alerts(alerts.clone());
        let lockdown = crate::lockdown::Lockdown::new(config.lockdown.clone());
        // The state is read once before serving, so a restart during lockdown stays locked.
        lockdown.apply(crate::lockdown::load(&store).await?, &limiter, &moderator);
        lockdown.spawn_poller(store.clone(), limiter.clone(), moderator.clone());
        let abuse = crate::abuse::Abuse::start(
            config.abuse.clone(),
            alerts.clone(),
            lockdown.clone(),
            store.clone(),
        );
        spawn_enforcement_totals(abuse.clone(), store.clone());
        let spend = crate::spend::Spend::start(config.spend.clone(), store.clone()).await?;
        if spend.enabled() {
            spend.spawn_flusher();
        }
        let filters = Arc::new(
            crate::safety::profiles::KeyFilters::build(
                &config.safety.filters,
                &config.safety.profiles,
            )
            .map_err(|why| anyhow::anyhow!("safety filters: {why}"))?,
        );
        let pipeline = Pipeline::standard(StageDeps {
            keys: keys.clone(),
            enforcement: enforcement.clone(),
            safety_ids,
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.request_body_timeout,
            moderator: moderator.clone(),
            filters: filters.clone(),
            limits: Arc::new(config.limits.clone()),
            limiter: limiter.clone(),
            geo,
            geo_config: config.geo.clone(),
            lockdown: lockdown.clone(),
            abuse: abuse.clone(),
            spend: spend.clone(),
        });
        Ok(Gateway {
            metrics,
            pipeline,
            upstream,
            moderator,
            filters,
            limiter,
            events,
            keys,
            store,
            enforcement,
            notices,
            vault,
            admin_tokens: crate::admin_api::AdminTokens::new(
                config
                    .admin
                    .token_sha256
                    .iter()
                    .copied()
                    .chain(
                        secrets
                            .admin_token
                            .as_ref()
                            .map(|t| hash_secret(t.expose())),
                    )
                    .collect(),
            ),
            trusted_proxies: config.server.trusted_proxies.clone(),
            observers: vec![
                Box::new(crate::limits::usage::UsageObservers),
                Box::new(crate::abuse::output::OutputObservers(abuse.clone())),
                Box::new(crate::spend::observer::SpendObservers(spend.clone())),
            ],
            abuse,
            alerts,
            lockdown,
            spend,
        })
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
                    Ok(stored) => gateway.keys.replace_stored(&stored),
                    Err(err) => {
                        tracing::warn!(%err, "could not refresh virtual keys; keeping the last known set")
                    }
                }
            }
        })
    }
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
        None => Secret::new(
            store
                .setting_or_insert(
                    SAFETY_SECRET_SETTING,
                    crate::keys::generate_secret()?.expose(),
                )
                .await?,
        ),
    };
    Ok(Arc::new(SafetyIdentifiers::new(&secret)))
}

fn declared_keys(config: &Config, secrets: &Secrets) -> Result<Vec<DeclaredKey>, Problems> {
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
            }),
        ));
    }
    problems.into_result(keys)
}
