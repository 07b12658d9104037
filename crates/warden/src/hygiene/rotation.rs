//! Rotating a vault key through OpenAI's Admin API: a new service account in the key's
//! project gives a new key; it is sealed and swapped in (every replica within a second,
//! requests in flight finish on the old key); the old key keeps working upstream for the
//! overlap, then is deleted there. Each step is an event and an alert; any failure before
//! the swap leaves the old key active.

use serde_json::json;

use super::client::AdminError;
use super::{Hygiene, Status};
use crate::alerts::Severity;
use crate::events::now_ms;
use crate::store::StoredUpstreamKey;

/// A claim older than this belongs to a replica that died mid-rotation.
const CLAIM_STALE_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("no Admin key is configured ([openai_admin] key_env)")]
    NoAdminKey,
    #[error("no master key is configured: rotated keys are sealed in the vault")]
    NoVault,
    #[error("no upstream key named '{0}' in the vault")]
    NotFound(String),
    #[error("'{0}' is retired; only an active or standby key is rotated")]
    Retired(String),
    #[error("'{0}' names no OpenAI project (proj_…): set one when adding the key")]
    NoProject(String),
    #[error("'{0}' is being rotated already")]
    Busy(String),
    #[error("OpenAI's Admin API: {0}")]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Internal(String),
}

impl RotationError {
    /// A low-cardinality label, and the admin API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            RotationError::NoAdminKey => "openai_admin_not_configured",
            RotationError::NoVault => "vault_locked",
            RotationError::NotFound(_) => "upstream_key_not_found",
            RotationError::Retired(_) => "upstream_key_retired",
            RotationError::NoProject(_) => "upstream_key_without_project",
            RotationError::Busy(_) => "rotation_in_progress",
            RotationError::Admin(_) => "openai_admin_error",
            RotationError::Internal(_) => "internal_error",
        }
    }
}

impl Hygiene {
    /// Rotates `name` now (the admin API, the CLI); `reason` goes into events and alerts.
    pub async fn rotate(&self, name: &str, reason: &str) -> Result<String, RotationError> {
        let _one = self.running.lock().await;
        self.rotate_locked(name, reason).await
    }

    pub(super) async fn rotate_due(&self, keys: &[StoredUpstreamKey], status: &mut Status) {
        let now = now_ms();
        for key in keys.iter().filter(|k| k.state == "active") {
            let Some(days) = key.rotate_every_days.filter(|d| *d > 0) else {
                continue;
            };
            if now - key.created_ms < days.saturating_mul(86_400_000) {
                continue;
            }
            match self.rotate_locked(&key.name, "schedule").await {
                Ok(new) => status
                    .rotations
                    .push(json!({"from": key.name, "to": new, "reason": "schedule"})),
                Err(err) => status
                    .errors
                    .push(format!("scheduled rotation of '{}': {err}", key.name)),
            }
        }
    }

    /// The rotation itself; the caller holds `running`.
    pub(super) async fn rotate_locked(
        &self,
        name: &str,
        reason: &str,
    ) -> Result<String, RotationError> {
        let client = self.client.as_ref().ok_or(RotationError::NoAdminKey)?;
        let master = self.vault.as_ref().ok_or(RotationError::NoVault)?;
        let store_err = |e: crate::store::StoreError| RotationError::Internal(e.to_string());
        let old = self
            .store
            .upstream_keys()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|k| k.name == name)
            .ok_or_else(|| RotationError::NotFound(name.to_owned()))?;
        if old.state == "retired" {
            return Err(RotationError::Retired(name.to_owned()));
        }
        let project = old
            .project
            .clone()
            .filter(|p| p.starts_with("proj_"))
            .ok_or_else(|| RotationError::NoProject(name.to_owned()))?;
        let now = now_ms();
        if !self
            .store
            .claim_rotation(name, now, CLAIM_STALE_MS)
            .await
            .map_err(store_err)?
        {
            return Err(RotationError::Busy(name.to_owned()));
        }
        let result = self.swap(client, master, &old, &project, reason).await;
        if let Err(err) = self.store.release_rotation(name).await {
            tracing::warn!(%err, name, "could not release the rotation claim");
        }
        if let Err(err) = &result {
            self.step(
                "upstream_key_rotation_failed",
                name,
                "failed",
                json!({"reason": reason, "error": err.to_string()}),
            );
            self.note(super::Note {
                kind: "upstream_key_rotation_failed",
                dedup: format!("upstream_key_rotation_failed:{name}"),
                severity: Severity::Critical,
                key: Some(name),
                title: format!("Rotation of upstream key '{name}' failed"),
                text: format!("Rotating '{name}' ({reason}) failed: {err}. The old key stays active; nothing changed for clients."),
                fields: json!({"key": name, "reason": reason, "error": err.to_string(), "code": err.code()}),
                event: false,
            });
        }
        result
    }

    async fn swap(
        &self,
        client: &super::client::AdminClient,
        master: &crate::vault::MasterKey,
        old: &StoredUpstreamKey,
        project: &str,
        reason: &str,
    ) -> Result<String, RotationError> {
        let now = now_ms();
        let lineage = old.lineage.clone().unwrap_or_else(|| old.name.clone());
        let stamp = crate::enforcement::format_ms(now)
            .replace(['-', ':'], "")
            .trim_end_matches('Z')
            .replace('T', "-");
        let base: String = lineage.chars().take(64 - stamp.len() - 1).collect();
        let new_name = format!("{base}-{stamp}");
        let started =
            json!({"key": old.name, "reason": reason, "new": new_name, "project": project});
        self.step(
            "upstream_key_rotation_started",
            &old.name,
            "allowed",
            started.clone(),
        );
        self.note(super::Note {
            kind: "upstream_key_rotation_started",
            dedup: format!("upstream_key_rotation_started:{}", old.name),
            severity: Severity::Info,
            key: Some(&old.name),
            title: format!("Rotating upstream key '{}' ({reason})", old.name),
            text: format!("A new key for project {project} is being created through OpenAI's Admin API; '{}' stays in use until it is ready.", old.name),
            fields: started,
            event: false,
        });
        let created = client
            .create_service_account(project, &format!("warden {new_name}"))
            .await?;
        let sealed = master
            .seal(&new_name, created.api_key.value.as_bytes())
            .map_err(|e| RotationError::Internal(e.to_string()));
        let stored = match sealed {
            Ok(sealed) => {
                let row = StoredUpstreamKey {
                    name: new_name.clone(),
                    sealed,
                    organization: old.organization.clone(),
                    project: Some(project.to_owned()),
                    state: "standby".into(),
                    created_ms: now,
                    updated_ms: now,
                    openai_key_id: Some(created.api_key.id.clone()),
                    openai_service_account: Some(created.id.clone()),
                    rotate_every_days: old.rotate_every_days,
                    lineage: Some(lineage.clone()),
                    ..Default::default()
                };
                self.store
                    .add_upstream_key(&row)
                    .await
                    .map_err(|e| RotationError::Internal(e.to_string()))
            }
            Err(err) => Err(err),
        };
        if let Err(err) = stored {
            // Not kept: the key just made must not live on unmanaged.
            if let Err(cleanup) = client.delete_service_account(project, &created.id).await {
                tracing::warn!(%cleanup, "could not delete the service account of a failed rotation");
            }
            return Err(err);
        }
        let made = json!({"key": new_name, "api_key_id": created.api_key.id, "service_account": created.id, "project": project, "replaces": old.name});
        self.step("upstream_key_created", &new_name, "allowed", made.clone());
        self.note(super::Note {
            kind: "upstream_key_created",
            dedup: format!("upstream_key_created:{new_name}"),
            severity: Severity::Info,
            key: Some(&new_name),
            title: format!("New upstream key '{new_name}' sealed in the vault"),
            text: format!(
                "OpenAI key {} (service account {}) replaces '{}'.",
                created.api_key.id, created.id, old.name
            ),
            fields: made,
            event: false,
        });
        let swapped = if old.state == "active" {
            self.store.activate_upstream_key(&new_name, now_ms()).await
        } else {
            self.store.retire_upstream_key(&old.name, now_ms()).await
        };
        swapped.map_err(|e| RotationError::Internal(e.to_string()))?;
        let delete_at = now_ms() + self.config.rotation_overlap.as_millis() as i64;
        self.store
            .schedule_upstream_deletion(&old.name, delete_at)
            .await
            .map_err(|e| RotationError::Internal(e.to_string()))?;
        let fields = json!({"key": old.name, "new_key": new_name, "reason": reason,
            "api_key_id": created.api_key.id, "old_deleted_after": crate::enforcement::format_ms(delete_at)});
        self.step("upstream_key_rotated", &old.name, "allowed", fields.clone());
        self.note(super::Note {
            kind: "upstream_key_rotated",
            dedup: format!("upstream_key_rotated:{}", old.name),
            severity: if reason == "used_elsewhere" { Severity::Critical } else { Severity::Info },
            key: Some(&old.name),
            title: format!("Upstream key '{}' rotated to '{new_name}'", old.name),
            text: format!("'{new_name}' is now in use (every gateway within a second); '{}' keeps working upstream until {} and is then deleted at OpenAI. Reason: {reason}.", old.name, crate::enforcement::format_ms(delete_at)),
            fields,
            event: false,
        });
        Ok(new_name)
    }

    /// Deletes upstream the rotated-out keys whose overlap ended.
    pub(super) async fn delete_due(&self, status: &mut Status) {
        let Some(client) = &self.client else {
            return;
        };
        let keys = match self.store.upstream_keys().await {
            Ok(keys) => keys,
            Err(err) => {
                status.errors.push(format!("store: {err}"));
                return;
            }
        };
        let now = now_ms();
        let due = keys.iter().filter(|k| {
            k.deleted_upstream_ms.is_none()
                && k.state != "active"
                && k.delete_after_ms.is_some_and(|at| at <= now)
        });
        for key in due {
            let result = match (
                &key.project,
                &key.openai_service_account,
                &key.openai_key_id,
            ) {
                (Some(project), Some(account), _) => {
                    client.delete_service_account(project, account).await
                }
                (Some(project), None, Some(id)) => client.delete_api_key(project, id).await,
                _ => {
                    status.errors.push(format!("'{}' cannot be deleted upstream: its OpenAI key id is unknown; delete it in OpenAI's dashboard", key.name));
                    continue;
                }
            };
            let gone = match result {
                Ok(()) => true,
                // Deleted by hand already: what was wanted.
                Err(AdminError::Status { status: 404, .. }) => true,
                Err(err) => {
                    status
                        .errors
                        .push(format!("deleting '{}' upstream: {err}", key.name));
                    self.note(super::Note {
                        kind: "upstream_key_delete_failed",
                        dedup: format!("upstream_key_delete_failed:{}", key.name),
                        severity: Severity::Warning,
                        key: Some(&key.name),
                        title: format!("Could not delete rotated-out key '{}' at OpenAI", key.name),
                        text: format!("Deleting '{}' upstream failed ({err}); it still works there. Warden retries every pass.", key.name),
                        fields: json!({"key": key.name, "error": err.to_string()}),
                        event: false,
                    });
                    false
                }
            };
            if gone {
                if let Err(err) = self.store.mark_deleted_upstream(&key.name, now).await {
                    status.errors.push(format!("store: {err}"));
                    continue;
                }
                let fields = json!({"key": key.name, "api_key_id": key.openai_key_id, "project": key.project});
                self.step("upstream_key_deleted", &key.name, "allowed", fields.clone());
                self.note(super::Note {
                    kind: "upstream_key_deleted",
                    dedup: format!("upstream_key_deleted:{}", key.name),
                    severity: Severity::Info,
                    key: Some(&key.name),
                    title: format!("Rotated-out key '{}' deleted at OpenAI", key.name),
                    text: format!(
                        "The overlap ended; '{}' no longer works anywhere.",
                        key.name
                    ),
                    fields,
                    event: false,
                });
            }
        }
    }
}
