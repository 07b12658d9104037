//! One generation of the config's per-request parts: the pipeline and the settings the
//! request handler and the admin API read. A request loads the current snapshot once and
//! keeps it to the end, so a reload never changes the rules under a request in flight.

use std::sync::Arc;

use ipnet::IpNet;

use crate::admin_api::AdminTokens;
use crate::config::limits::LimitsConfig;
use crate::config::{Config, Problems, Secrets};
use crate::keys::{hash_secret, KeyRegistry};
use crate::pipeline::{Pipeline, StageDeps};
use crate::safety::moderation::Moderator;
use crate::store::StoredKey;

pub struct Snapshot {
    /// 1 at start, one more for every applied reload.
    pub generation: u64,
    pub pipeline: Pipeline,
    /// Keys declared in this config plus the store's keys (refreshed every second).
    pub keys: Arc<KeyRegistry>,
    /// This config's moderation policy over the process's one cache and breaker.
    pub moderator: Arc<Moderator>,
    /// The local filters' scanner for each key (input stage and output checks).
    pub filters: Arc<crate::safety::profiles::KeyFilters>,
    pub trusted_proxies: Vec<IpNet>,
    /// Digests of the tokens the admin API accepts.
    pub admin_tokens: AdminTokens,
    pub limits: Arc<LimitsConfig>,
}

/// The long-lived services the stages use. They outlive every reload: counters, strikes,
/// detector windows and spend must not restart because a policy changed.
#[derive(Clone)]
pub struct Live {
    pub enforcement: Arc<crate::enforcement::Enforcement>,
    pub safety_ids: Arc<crate::identity::safety_id::SafetyIdentifiers>,
    pub limiter: crate::limits::Limiter,
    pub lockdown: crate::lockdown::Lockdown,
    pub abuse: crate::abuse::Abuse,
    pub spend: crate::spend::Spend,
    /// Object owners (`routes::ownership`).
    pub store: crate::store::Store,
}

impl Snapshot {
    /// Builds every per-config part; every problem is reported at once, with its key path.
    /// CPU-bound (rule sets are compiled here): run it off the async workers.
    pub fn build(
        config: &Config,
        secrets: &Secrets,
        live: Live,
        moderator: Arc<Moderator>,
        stored_keys: &[StoredKey],
        generation: u64,
    ) -> Result<Snapshot, Problems> {
        let mut problems = Problems::default();
        let declared = crate::gateway::declared_keys(config, secrets).unwrap_or_else(|p| {
            problems.extend(p);
            Vec::new()
        });
        let keys = Arc::new(KeyRegistry::new(declared));
        keys.replace_stored(stored_keys);
        let filters = crate::safety::profiles::KeyFilters::build(
            &config.safety.filters,
            &config.safety.profiles,
        )
        .map_err(|why| problems.push("safety.filters", why))
        .ok()
        .map(Arc::new);
        let geo = match &config.geo.database {
            Some(path) => crate::geo::GeoDb::open(path)
                .map_err(|err| problems.push("geo.database", format!("{err:#}")))
                .ok()
                .map(Arc::new),
            None => None,
        };
        let (Some(filters), true) = (filters, problems.is_empty()) else {
            return Err(problems);
        };
        let limits = Arc::new(config.limits.clone());
        let pipeline = Pipeline::standard(StageDeps {
            keys: keys.clone(),
            enforcement: live.enforcement,
            safety_ids: live.safety_ids,
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.request_body_timeout,
            moderator: moderator.clone(),
            filters: filters.clone(),
            limits: limits.clone(),
            limiter: live.limiter,
            geo,
            geo_config: config.geo.clone(),
            lockdown: live.lockdown,
            abuse: live.abuse,
            spend: live.spend,
            store: live.store,
        });
        let admin_tokens = AdminTokens::new(
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
        );
        Ok(Snapshot {
            generation,
            pipeline,
            keys,
            moderator,
            filters,
            trusted_proxies: config.server.trusted_proxies.clone(),
            admin_tokens,
            limits,
        })
    }
}
