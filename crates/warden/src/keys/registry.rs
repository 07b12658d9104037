//! The in-memory table of live virtual keys. The hot path reads it without locks; a
//! background refresh swaps in keys created or revoked through the store.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{hash_secret, KeyOrigin, KeyScope, SecretHash, VirtualKey};
use crate::store::StoredKey;

/// A key from the config file, with the hash of its Bearer value if it has one.
pub type DeclaredKey = (Option<SecretHash>, Arc<VirtualKey>);

pub struct KeyRegistry {
    by_hash: ArcSwap<HashMap<SecretHash, Arc<VirtualKey>>>,
    /// Names of revoked (or expired) store keys by secret hash: a leaked key still in use.
    retired: ArcSwap<HashMap<SecretHash, String>>,
    /// Keys from the config file, with the hash of their Bearer value if they have one.
    declared: Vec<DeclaredKey>,
    /// Keys that accept a user token with no Bearer key, tried in config order.
    token_only: Vec<Arc<VirtualKey>>,
}

impl KeyRegistry {
    pub fn new(declared: Vec<DeclaredKey>) -> Self {
        let token_only = declared
            .iter()
            .filter(|(_, key)| key.jwt.is_some())
            .map(|(_, key)| key.clone())
            .collect();
        let registry = Self {
            by_hash: ArcSwap::from_pointee(HashMap::new()),
            retired: ArcSwap::from_pointee(HashMap::new()),
            declared,
            token_only,
        };
        registry.replace_stored(&[]);
        registry
    }

    /// Whether some config key brings its own upstream key (so a missing default one
    /// does not stop all traffic).
    pub fn any_own_upstream_key(&self) -> bool {
        self.declared
            .iter()
            .any(|(_, key)| key.upstream_key.is_some())
    }

    pub fn lookup(&self, bearer: &str) -> Option<Arc<VirtualKey>> {
        self.by_hash.load().get(&hash_secret(bearer)).cloned()
    }

    /// The name of the revoked or expired key this secret belonged to, if any.
    pub fn retired(&self, bearer: &str) -> Option<String> {
        self.retired.load().get(&hash_secret(bearer)).cloned()
    }

    pub fn token_keys(&self) -> &[Arc<VirtualKey>] {
        &self.token_only
    }

    /// Whether a live key (declared or stored) has this name; for operator calls only.
    pub fn knows(&self, name: &str) -> bool {
        self.declared_names().any(|n| n == name)
            || self.by_hash.load().values().any(|k| k.name == name)
    }

    pub fn declared_names(&self) -> impl Iterator<Item = &str> {
        self.declared.iter().map(|(_, k)| k.name.as_str())
    }

    /// The config file's keys, as operator listings show them.
    pub fn declared(&self) -> Vec<super::lifecycle::Declared> {
        self.declared
            .iter()
            .map(|(_, k)| super::lifecycle::Declared {
                name: k.name.clone(),
                end_user: k.end_user,
                trusted_user_field: k.trusted_user_field,
            })
            .collect()
    }

    /// Rebuilds the table from the config keys plus the store's active keys. A store key
    /// whose name is declared in the config is ignored: the file is the authority.
    pub fn replace_stored(&self, stored: &[StoredKey]) {
        let mut table = HashMap::with_capacity(self.declared.len() + stored.len());
        for (hash, key) in &self.declared {
            if let Some(hash) = hash {
                table.insert(*hash, key.clone());
            }
        }
        let now = crate::events::now_ms() / 1000;
        let mut retired = HashMap::new();
        for key in stored {
            let expired = key.expires_at.is_some_and(|at| at <= now);
            if key.revoked_at.is_some() || expired {
                retired.insert(key.secret_hash, key.name.clone());
                continue;
            }
            if self.declared.iter().any(|(_, d)| d.name == key.name) {
                continue;
            }
            let scope =
                (key.allowed_models.is_some() || key.allowed_endpoints.is_some()).then(|| {
                    KeyScope {
                        models: key.allowed_models.clone(),
                        endpoints: key.allowed_endpoints.clone(),
                    }
                });
            let live = Arc::new(VirtualKey {
                name: key.name.clone(),
                origin: KeyOrigin::Store,
                end_user: key.end_user,
                trusted_user_field: key.trusted_user_field,
                jwt: None,
                upstream_key: None,
                openai_project: None,
                scope,
                shared_objects: false,
            });
            // A rotated key's old secret works until its overlap ends.
            if let (Some(previous), Some(until)) = (key.previous_hash, key.previous_until) {
                if until > now {
                    table.insert(previous, live.clone());
                }
            }
            table.insert(key.secret_hash, live);
        }
        self.by_hash.store(Arc::new(table));
        self.retired.store(Arc::new(retired));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndUserPolicy;

    fn stored(name: &str, secret: &str, revoked: bool) -> StoredKey {
        StoredKey {
            name: name.into(),
            secret_hash: hash_secret(secret),
            prefix: "wk-".into(),
            end_user: EndUserPolicy::Optional,
            trusted_user_field: false,
            created_at: 0,
            revoked_at: revoked.then_some(1),
            expires_at: None,
            allowed_models: None,
            allowed_endpoints: None,
            previous_hash: None,
            previous_until: None,
        }
    }

    fn declared(name: &str, secret: &str) -> DeclaredKey {
        (
            Some(hash_secret(secret)),
            Arc::new(VirtualKey {
                name: name.into(),
                origin: KeyOrigin::Config,
                end_user: EndUserPolicy::Required,
                trusted_user_field: false,
                jwt: None,
                upstream_key: None,
                openai_project: None,
                scope: None,
                shared_objects: false,
            }),
        )
    }

    #[test]
    fn finds_config_and_store_keys_and_forgets_revoked_ones() {
        let registry = KeyRegistry::new(vec![declared("app", "secret-app-0123456789")]);
        assert_eq!(
            registry
                .lookup("secret-app-0123456789")
                .map(|k| k.name.clone())
                .as_deref(),
            Some("app")
        );
        assert!(registry.lookup("nope").is_none());

        registry.replace_stored(&[stored("cli", "secret-cli", false)]);
        assert!(registry.lookup("secret-cli").is_some());
        registry.replace_stored(&[stored("cli", "secret-cli", true)]);
        assert!(registry.lookup("secret-cli").is_none());
        assert!(registry.lookup("secret-app-0123456789").is_some());
    }

    #[test]
    fn a_store_key_cannot_shadow_a_config_key() {
        let registry = KeyRegistry::new(vec![declared("app", "secret-app-0123456789")]);
        registry.replace_stored(&[stored("app", "other", false)]);
        assert!(registry.lookup("other").is_none());
    }
}
