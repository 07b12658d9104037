//! The organization behind the stand-in: projects, service accounts and their API keys (the
//! keys `/v1` accepts), and the usage and costs each key really caused, per minute.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::text;

/// The project every stand-in starts with; the configured API key belongs to it.
pub const DEFAULT_PROJECT: &str = "proj_standin";
/// The id of the configured API key in the Admin API.
pub const DEFAULT_KEY_ID: &str = "key_standin";

/// Which Usage API a call counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageKind {
    Completions,
    Embeddings,
    /// Counted in images (`output_tokens` carries the number of images).
    Images,
}

impl UsageKind {
    pub fn parse(text: &str) -> Option<UsageKind> {
        match text {
            "completions" => Some(UsageKind::Completions),
            "embeddings" => Some(UsageKind::Embeddings),
            "images" => Some(UsageKind::Images),
            _ => None,
        }
    }
}

/// What one answered call cost, attached to its response by the endpoint that served it.
#[derive(Debug, Clone)]
pub struct Served {
    pub kind: UsageKind,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub id: String,
    pub name: String,
    pub project: String,
    pub created_at: u64,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub value: String,
    pub name: String,
    pub project: String,
    /// `None`: owned by a user (a key made by hand in the dashboard).
    pub service_account: Option<String>,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

impl ApiKey {
    /// `sk-abc...wxyz`, as the Admin API shows a key.
    pub fn redacted(&self) -> String {
        let v = &self.value;
        let head = v.get(..6).unwrap_or(v);
        let tail = v.get(v.len().saturating_sub(4)..).unwrap_or("");
        format!("{head}...{tail}")
    }
}

/// Counted per (key id, project, minute start in Unix seconds, kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

type UsageKey = (String, String, u64, UsageKind);

#[derive(Debug, Default)]
pub(crate) struct OrgState {
    pub projects: Vec<Project>,
    pub service_accounts: Vec<ServiceAccount>,
    pub keys: Vec<ApiKey>,
    pub usage: BTreeMap<UsageKey, Counts>,
    /// (project, day start) → USD.
    pub costs: BTreeMap<(String, u64), f64>,
}

/// No `Debug`: it holds key values.
pub(crate) struct Org {
    pub state: Mutex<OrgState>,
}

impl Org {
    pub(crate) fn new(api_key: Option<&str>) -> Org {
        let now = text::now();
        let mut state = OrgState {
            projects: vec![Project {
                id: DEFAULT_PROJECT.into(),
                name: "Default project".into(),
                created_at: now,
            }],
            ..OrgState::default()
        };
        if let Some(key) = api_key {
            state.service_accounts.push(ServiceAccount {
                id: "svc_acct_standin".into(),
                name: "standin default".into(),
                project: DEFAULT_PROJECT.into(),
                created_at: now,
            });
            state.keys.push(ApiKey {
                id: DEFAULT_KEY_ID.into(),
                value: key.to_owned(),
                name: "standin default".into(),
                project: DEFAULT_PROJECT.into(),
                service_account: Some("svc_acct_standin".into()),
                created_at: now,
                last_used_at: None,
            });
        }
        Org {
            state: Mutex::new(state),
        }
    }

    /// The live key with this value, if any (its id and project).
    pub(crate) fn key_for(&self, value: &str) -> Option<(String, String)> {
        let state = self.state.lock().ok()?;
        state
            .keys
            .iter()
            .find(|k| k.value == value)
            .map(|k| (k.id.clone(), k.project.clone()))
    }

    pub(crate) fn key_ids(&self, project: &str) -> Vec<String> {
        self.state.lock().map_or_else(
            |_| Vec::new(),
            |s| {
                s.keys
                    .iter()
                    .filter(|k| k.project == project)
                    .map(|k| k.id.clone())
                    .collect()
            },
        )
    }

    /// Adds a key (owned by a new service account unless `user_owned`); returns its id.
    pub(crate) fn add_key(
        &self,
        project: &str,
        name: &str,
        value: &str,
        user_owned: bool,
    ) -> String {
        let now = text::now();
        let id = text::id("key_");
        if let Ok(mut state) = self.state.lock() {
            let service_account = (!user_owned).then(|| {
                let sa = ServiceAccount {
                    id: text::id("svc_acct_"),
                    name: name.to_owned(),
                    project: project.to_owned(),
                    created_at: now,
                };
                let sa_id = sa.id.clone();
                state.service_accounts.push(sa);
                sa_id
            });
            state.keys.push(ApiKey {
                id: id.clone(),
                value: value.to_owned(),
                name: name.to_owned(),
                project: project.to_owned(),
                service_account,
                created_at: now,
                last_used_at: None,
            });
        }
        id
    }

    /// Counts a call on `key_id` at `at` (Unix seconds), and what it cost.
    pub(crate) fn count(
        &self,
        key_id: &str,
        project: &str,
        at: u64,
        served: &Served,
        requests: u64,
    ) {
        let minute = at - at % 60;
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(key) = state.keys.iter_mut().find(|k| k.id == key_id) {
            key.last_used_at = Some(at);
        }
        let counts = state
            .usage
            .entry((key_id.to_owned(), project.to_owned(), minute, served.kind))
            .or_default();
        counts.requests += requests;
        counts.input_tokens += served.input_tokens;
        counts.output_tokens += served.output_tokens;
        let (input, output) = price(&served.model);
        let usd = (served.input_tokens as f64 * input + served.output_tokens as f64 * output) / 1e6;
        *state
            .costs
            .entry((project.to_owned(), at - at % 86_400))
            .or_default() += usd;
    }
}

/// USD per 1M tokens (input, output) the stand-in bills; unknown models as gpt-4o.
fn price(model: &str) -> (f64, f64) {
    const PRICES: &[(&str, f64, f64)] = &[
        ("gpt-4o-mini", 0.15, 0.60),
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4.1-mini", 0.40, 1.60),
        ("gpt-4.1", 2.00, 8.00),
        ("text-embedding-3-small", 0.02, 0.0),
        ("text-embedding-3-large", 0.13, 0.0),
    ];
    if model == "gpt-image-1" {
        // Per image, carried as output "tokens": 0.04 USD each.
        return (0.0, 40_000.0);
    }
    PRICES
        .iter()
        .find(|(prefix, _, _)| model.starts_with(prefix))
        .map_or((2.50, 10.00), |(_, i, o)| (*i, *o))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn counts_per_key_minute_and_kind_and_bills_the_project() {
        let org = Org::new(Some("sk-standin-default-key"));
        let (id, project) = org.key_for("sk-standin-default-key").unwrap();
        let served = Served {
            kind: UsageKind::Completions,
            model: "gpt-4o-mini".into(),
            input_tokens: 1_000_000,
            output_tokens: 0,
        };
        org.count(&id, &project, 120, &served, 1);
        org.count(&id, &project, 179, &served, 1);
        let state = org.state.lock().unwrap();
        let counts = state.usage[&(id.clone(), project.clone(), 120, UsageKind::Completions)];
        assert_eq!(counts.requests, 2);
        assert!((state.costs[&(project, 0)] - 0.30).abs() < 1e-9);
        assert_eq!(state.keys[0].redacted(), "sk-sta...-key");
    }
}
