//! OpenAI's Admin, Usage and Costs API objects, as far as key hygiene reads them. Unknown
//! fields are ignored; fields OpenAI may leave out or null default.

use serde::Deserialize;
use serde_json::Value;

/// An Admin API list page: `{"object": "list", "data", "first_id", "last_id", "has_more"}`.
#[derive(Debug, Deserialize)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub last_id: Option<String>,
    #[serde(default)]
    pub has_more: bool,
}

/// `organization.project`.
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// `organization.project.api_key`: the key itself only as `sk-abc...xyz`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProjectApiKey {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub redacted_value: String,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub last_used_at: Option<i64>,
    #[serde(default)]
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Owner {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub service_account: Option<IdOnly>,
    #[serde(default)]
    pub user: Option<IdOnly>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl ProjectApiKey {
    /// Whether `secret` is the key OpenAI shows as `redacted_value` (`sk-abc...xyz`: the
    /// secret starts with the part before `...` and ends with the part after it).
    pub fn matches(&self, secret: &str) -> bool {
        let Some((head, tail)) = self.redacted_value.split_once("...") else {
            return false;
        };
        head.len() >= 3
            && !tail.is_empty()
            && secret.len() > head.len() + tail.len()
            && secret.starts_with(head)
            && secret.ends_with(tail)
    }

    pub fn owner_label(&self) -> String {
        match &self.owner {
            Some(Owner {
                kind,
                service_account: Some(sa),
                ..
            }) => {
                format!("{kind} {}", sa.name.as_deref().unwrap_or(&sa.id))
            }
            Some(Owner {
                kind,
                user: Some(u),
                ..
            }) => format!("{kind} {}", u.name.as_deref().unwrap_or(&u.id)),
            Some(owner) => owner.kind.clone(),
            None => "unknown".into(),
        }
    }
}

/// `organization.project.service_account` as created, with its key in clear.
#[derive(Debug, Deserialize)]
pub struct NewServiceAccount {
    pub id: String,
    pub api_key: NewApiKey,
}

#[derive(Deserialize)]
pub struct NewApiKey {
    pub id: String,
    pub value: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("value", &"****")
            .finish()
    }
}

/// `…deleted`: `{"id", "deleted": true}`.
#[derive(Debug, Deserialize)]
pub struct Deleted {
    pub deleted: bool,
}

/// A Usage or Costs page: `{"object": "page", "data": [bucket], "has_more", "next_page"}`.
#[derive(Debug, Deserialize)]
pub struct UsagePage {
    pub data: Vec<Bucket>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub next_page: Option<String>,
}

/// `{"object": "bucket", "start_time", "end_time", "results": [...]}` (Unix seconds).
#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    pub start_time: i64,
    pub end_time: i64,
    #[serde(default)]
    pub results: Vec<UsageResult>,
}

/// One usage or cost result; each kind carries the fields it has.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UsageResult {
    pub api_key_id: Option<String>,
    pub project_id: Option<String>,
    pub num_model_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Costs only: `{"value", "currency"}`.
    pub amount: Option<Amount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Amount {
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub currency: String,
}

/// (code, message) of an OpenAI error envelope, or what can be said without one.
pub fn error_of(body: &[u8]) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let text = |field: &str| error.and_then(|e| e[field].as_str()).map(str::to_owned);
    let code = text("code")
        .or_else(|| text("type"))
        .unwrap_or_else(|| "unknown".into());
    let message = text("message").unwrap_or_else(|| {
        let raw = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("no OpenAI error envelope (body starts: {raw:?})")
    });
    (code, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redacted_value_matches_only_its_secret() {
        let key: ProjectApiKey = serde_json::from_value(serde_json::json!({
            "object": "organization.project.api_key", "id": "key_1",
            "redacted_value": "sk-abc...wxyz", "created_at": 1, "owner": {"type": "service_account",
            "service_account": {"id": "svc_acct_1", "name": "warden"}}
        }))
        .unwrap();
        assert!(key.matches("sk-abcdefghijklmnopwxyz"));
        assert!(!key.matches("sk-abXdefghijklmnopwxyz"));
        assert!(!key.matches("sk-abcwxyz"), "too short to be that key");
        assert_eq!(key.owner_label(), "service_account warden");
    }

    #[test]
    fn error_envelope_and_bare_bodies() {
        let (code, message) = error_of(br#"{"error":{"message":"Invalid admin key","type":"invalid_request_error","code":"invalid_api_key","param":null}}"#);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("invalid_api_key", "Invalid admin key")
        );
        let (code, message) = error_of(b"<html>bad gateway</html>");
        assert_eq!(code, "unknown");
        assert!(message.contains("bad gateway"));
    }
}
