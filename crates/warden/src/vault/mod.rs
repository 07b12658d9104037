//! Upstream keys kept in the store, encrypted at rest with AES-256-GCM under a master key
//! (`[vault] master_key_env`, 32 bytes base64). The store holds a sealed check value, so a
//! wrong master key is caught at start-up, before any key is used. One key is active at a
//! time; activating another swaps it in on every replica within a second, while requests
//! already sent finish with the key they took: a rotation fails no request.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::proxy::upstream::{Defaults, Upstream};
use crate::store::{Store, StoredUpstreamKey};

const CHECK_SETTING: &str = "vault_check";
const CHECK_TEXT: &[u8] = b"warden-vault-v1";
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the master key does not open this store's vault (wrong key, or the store was sealed with another one)")]
    WrongMasterKey,
    #[error("stored vault data is damaged: {0}")]
    Damaged(&'static str),
    #[error("no system randomness available")]
    Randomness,
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The master key, parsed from base64 (32 bytes).
pub struct MasterKey(LessSafeKey);

impl MasterKey {
    pub fn parse(base64_key: &str) -> Option<MasterKey> {
        let bytes = STANDARD.decode(base64_key.trim()).ok()?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        (bytes.len() == 32).then(|| MasterKey(LessSafeKey::new(key)))
    }

    /// `nonce:ciphertext`, both base64; the name is bound as associated data so a sealed
    /// key cannot be moved to another entry.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<String, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| VaultError::Randomness)?;
        let mut data = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| VaultError::Randomness)?;
        Ok(format!(
            "{}:{}",
            STANDARD.encode(nonce),
            STANDARD.encode(data)
        ))
    }

    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, VaultError> {
        let (nonce, data) = sealed
            .split_once(':')
            .ok_or(VaultError::Damaged("sealed value"))?;
        let nonce: [u8; NONCE_LEN] = STANDARD
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(VaultError::Damaged("nonce"))?;
        let mut data = STANDARD
            .decode(data)
            .map_err(|_| VaultError::Damaged("ciphertext"))?;
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| VaultError::WrongMasterKey)?;
        Ok(plain.to_vec())
    }
}

/// Proves the master key opens this store's vault (sealing the check value on first use).
pub async fn unlock(store: &Store, master: &MasterKey) -> Result<(), VaultError> {
    let sealed = master.seal(CHECK_SETTING, CHECK_TEXT)?;
    let stored = store.setting_or_insert(CHECK_SETTING, &sealed).await?;
    match master.open(CHECK_SETTING, &stored) {
        Ok(text) if text == CHECK_TEXT => Ok(()),
        _ => Err(VaultError::WrongMasterKey),
    }
}

/// The active key, opened, as the upstream's defaults.
pub fn defaults_of(master: &MasterKey, key: &StoredUpstreamKey) -> Result<Defaults, VaultError> {
    let secret = master.open(&key.name, &key.sealed)?;
    let secret = String::from_utf8(secret).map_err(|_| VaultError::Damaged("key text"))?;
    let header = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
    };
    Ok(Defaults {
        key: crate::proxy::headers::bearer(&secret),
        organization: header(&key.organization),
        project: header(&key.project),
        name: Some(key.name.clone()),
    })
}

/// Uses the vault's active key (if any) now, then follows activations every second.
/// `fallback` (the environment or file key) serves while the vault has no active key.
pub async fn serve_active(
    store: Store,
    master: Arc<MasterKey>,
    upstream: Arc<Upstream>,
    fallback: Defaults,
) -> Result<(), VaultError> {
    apply(&store, &master, &upstream, &fallback).await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = apply(&store, &master, &upstream, &fallback).await {
                tracing::warn!(%err, "could not refresh the active upstream key; keeping the current one");
            }
        }
    });
    Ok(())
}

async fn apply(
    store: &Store,
    master: &MasterKey,
    upstream: &Upstream,
    fallback: &Defaults,
) -> Result<(), VaultError> {
    let active = store.active_upstream_key().await?;
    let current = upstream.defaults();
    match active {
        Some(key) if current.name.as_deref() != Some(key.name.as_str()) => {
            upstream.set_defaults(defaults_of(master, &key)?);
            tracing::info!(name = %key.name, "upstream key switched");
        }
        None if current.name.is_some() => upstream.set_defaults(fallback.clone()),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_name() {
        let a = MasterKey::parse(&STANDARD.encode([7u8; 32])).unwrap();
        let b = MasterKey::parse(&STANDARD.encode([8u8; 32])).unwrap();
        let sealed = a.seal("primary", b"sk-secret").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(a.open("primary", &sealed).unwrap(), b"sk-secret");
        assert!(matches!(
            b.open("primary", &sealed),
            Err(VaultError::WrongMasterKey)
        ));
        assert!(a.open("other", &sealed).is_err(), "bound to its name");
        assert!(MasterKey::parse("c2hvcnQ=").is_none(), "not 32 bytes");
    }
}
