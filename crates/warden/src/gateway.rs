//! Everything a running gateway holds, assembled once from the config and its secrets.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, Problems, Secrets};
use crate::events::{EventLog, EventSink, LogSink, Metrics, StoreSink};
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
    /// Rate, token and concurrency limits (shared through Redis when configured).
    pub limiter: crate::limits::Limiter,
    pub events: EventLog,
    pub keys: Arc<KeyRegistry>,
    pub store: Store,
    pub trusted_proxies: Vec<IpNet>,
    /// Spend per organization, key and end user, against their budgets.
    pub spend: crate::spend::Spend,
    /// Response watchers, in the order they see frames.
    pub observers: Vec<Box<dyn ObserverFactory>>,
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

        let safety_secret = match &secrets.safety_identifier {
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
        let safety_ids = Arc::new(SafetyIdentifiers::new(&safety_secret));

        let metrics = Metrics::default();
        let sinks: Vec<Box<dyn EventSink>> = vec![
            Box::new(LogSink),
            Box::new(metrics.clone()),
            Box::new(StoreSink(store.clone())),
        ];
        let events = EventLog::start(sinks);
        let upstream = Arc::new(Upstream::new(
            &config.upstream,
            secrets.upstream_default.as_ref(),
        )?);
        let moderator = Arc::new(Moderator::new(
            config.safety.moderation.clone(),
            Arc::new(UpstreamBackend {
                upstream: upstream.clone(),
            }),
        ));
        let limiter = crate::limits::Limiter::new(&config.limits, &config.cluster)?;
        limiter.spawn_sweeper();
        let spend = crate::spend::Spend::start(config.spend.clone(), store.clone()).await?;
        if spend.enabled() {
            spend.spawn_flusher();
        }
        let pipeline = Pipeline::standard(StageDeps {
            keys: keys.clone(),
            safety_ids,
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.request_body_timeout,
            moderator: moderator.clone(),
            filters: Arc::new(
                crate::safety::filters::Scanner::new(&config.safety.filters)
                    .map_err(|why| anyhow::anyhow!("safety.filters: {why}"))?,
            ),
            limits: Arc::new(config.limits.clone()),
            limiter: limiter.clone(),
            spend: spend.clone(),
        });
        Ok(Gateway {
            metrics,
            pipeline,
            upstream,
            moderator,
            limiter,
            events,
            keys,
            store,
            trusted_proxies: config.server.trusted_proxies.clone(),
            observers: vec![
                Box::new(crate::limits::usage::UsageObservers),
                Box::new(crate::spend::observer::SpendObservers(spend.clone())),
            ],
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
            }),
        ));
    }
    problems.into_result(keys)
}
