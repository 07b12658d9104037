//! Which keys the organization's projects hold (Admin API), and which of them are
//! Warden's: a vault key by its recorded OpenAI id, or any key Warden holds whose secret
//! matches the `redacted_value` OpenAI shows. The rest are unmanaged.

use std::collections::HashMap;

use serde::Serialize;

use super::client::{AdminClient, AdminError};
use super::wire::ProjectApiKey;
use crate::secret::Secret;
use crate::store::StoredUpstreamKey;

/// A key Warden holds: its name in the ledger and, for vault keys, its stored row.
pub struct Held {
    pub name: String,
    pub secret: Secret,
    pub vault: Option<StoredUpstreamKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Managed {
    pub name: String,
    pub api_key_id: String,
    pub project: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unmanaged {
    pub api_key_id: String,
    pub project: String,
    pub name: Option<String>,
    pub redacted_value: String,
    pub owner: String,
    pub created_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub managed: Vec<Managed>,
    pub unmanaged: Vec<Unmanaged>,
    /// Vault keys whose OpenAI id was found now (to be stored).
    pub discovered: Vec<(String, String)>,
}

impl Inventory {
    /// OpenAI key id → Warden's name for it.
    pub fn names_by_id(&self) -> HashMap<String, String> {
        self.managed
            .iter()
            .map(|m| (m.api_key_id.clone(), m.name.clone()))
            .collect()
    }
}

pub async fn take(
    client: &AdminClient,
    projects: &[String],
    held: &[Held],
) -> Result<Inventory, AdminError> {
    let projects = if projects.is_empty() {
        client
            .projects()
            .await?
            .into_iter()
            .filter(|p| p.status.as_deref().is_none_or(|s| s == "active"))
            .map(|p| p.id)
            .collect()
    } else {
        projects.to_vec()
    };
    let mut inventory = Inventory::default();
    for project in projects {
        for key in client.project_api_keys(&project).await? {
            classify(&mut inventory, &project, key, held);
        }
    }
    Ok(inventory)
}

fn classify(inventory: &mut Inventory, project: &str, key: ProjectApiKey, held: &[Held]) {
    let by_id = held.iter().find(|h| {
        h.vault
            .as_ref()
            .is_some_and(|v| v.openai_key_id.as_deref() == Some(key.id.as_str()))
    });
    let owner = by_id.or_else(|| held.iter().find(|h| key.matches(h.secret.expose())));
    match owner {
        Some(h) => {
            if by_id.is_none() && h.vault.is_some() {
                inventory.discovered.push((h.name.clone(), key.id.clone()));
            }
            inventory.managed.push(Managed {
                name: h.name.clone(),
                api_key_id: key.id,
                project: project.to_owned(),
            });
        }
        None => inventory.unmanaged.push(Unmanaged {
            owner: key.owner_label(),
            api_key_id: key.id,
            project: project.to_owned(),
            name: key.name,
            redacted_value: key.redacted_value,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        }),
    }
}
