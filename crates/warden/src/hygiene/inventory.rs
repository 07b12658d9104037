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
    /// Warden's name for each of its names: one OpenAI key may be held under several
    /// (the environment key also sealed in the vault); they are counted together, under
    /// the vault's name when there is one.
    pub fn aliases(&self) -> (HashMap<String, String>, HashMap<String, String>) {
        let mut by_id: HashMap<String, String> = HashMap::new();
        for m in &self.managed {
            by_id
                .entry(m.api_key_id.clone())
                .and_modify(|name| {
                    if name.starts_with('(') && !m.name.starts_with('(') {
                        *name = m.name.clone();
                    }
                })
                .or_insert_with(|| m.name.clone());
        }
        let alias = self
            .managed
            .iter()
            .filter_map(|m| Some((m.name.clone(), by_id.get(&m.api_key_id)?.clone())))
            .collect();
        (by_id, alias)
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
    let owners: Vec<&Held> = held
        .iter()
        .filter(|h| {
            let by_id = h
                .vault
                .as_ref()
                .is_some_and(|v| v.openai_key_id.as_deref() == Some(key.id.as_str()));
            by_id || key.matches(h.secret.expose())
        })
        .collect();
    if owners.is_empty() {
        inventory.unmanaged.push(Unmanaged {
            owner: key.owner_label(),
            api_key_id: key.id,
            project: project.to_owned(),
            name: key.name,
            redacted_value: key.redacted_value,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
        });
        return;
    }
    for h in owners {
        if let Some(vault) = &h.vault {
            if vault.openai_key_id.as_deref() != Some(key.id.as_str()) {
                inventory.discovered.push((h.name.clone(), key.id.clone()));
            }
        }
        inventory.managed.push(Managed {
            name: h.name.clone(),
            api_key_id: key.id.clone(),
            project: project.to_owned(),
        });
    }
}
