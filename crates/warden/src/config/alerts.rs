//! `[alerts]` and `[[alerts.webhooks]]`: where alerts go, and how often.

use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawAlerts {
        cooldown_secs: u64,
        max_per_minute: u64,
        queue: u64,
        webhooks: Vec<toml::Value>,
    }
}

section! {
    pub struct RawWebhook {
        url: String,
        format: String,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"text": …}`: Slack incoming webhooks and the many tools that copy them.
    Slack,
    /// The alert as a JSON object with all its fields.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: http::Uri,
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    pub webhooks: Vec<Webhook>,
    /// The same alert (same dedup key) is sent at most once per cool-down.
    pub cooldown: Duration,
    /// At most this many alerts leave per minute; the rest are dropped and counted.
    pub max_per_minute: u64,
    /// Alerts waiting to be sent; a full queue drops new ones (and counts them).
    pub queue: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            cooldown: Duration::from_secs(600),
            max_per_minute: 20,
            queue: 1024,
        }
    }
}

pub fn validate(value: Option<&toml::Value>, problems: &mut Problems) -> AlertsConfig {
    const PATH: &str = "alerts";
    let raw = value
        .map(|v| RawAlerts::read(v, PATH, problems))
        .unwrap_or_default();
    let d = AlertsConfig::default();
    let mut positive = |value: Option<u64>, default: u64, key: &str| match value {
        Some(0) => {
            problems.push(format!("{PATH}.{key}"), "must be greater than 0");
            default
        }
        Some(n) => n,
        None => default,
    };
    let cooldown = positive(raw.cooldown_secs, d.cooldown.as_secs(), "cooldown_secs");
    let max_per_minute = positive(raw.max_per_minute, d.max_per_minute, "max_per_minute");
    let queue = positive(raw.queue, d.queue as u64, "queue").min(1 << 20) as usize;
    let mut webhooks = Vec::new();
    for (i, item) in raw.webhooks.iter().flatten().enumerate() {
        let path = format!("{PATH}.webhooks[{i}]");
        let hook = RawWebhook::read(item, &path, problems);
        let url = match hook.url.as_deref() {
            None => {
                problems.push(format!("{path}.url"), "missing: every webhook needs a url");
                continue;
            }
            Some(text) => match text.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http") | Some("https"))
                        && uri.authority().is_some() =>
                {
                    uri
                }
                _ => {
                    problems.push(
                        format!("{path}.url"),
                        format!("'{text}' is not an http:// or https:// URL"),
                    );
                    continue;
                }
            },
        };
        let format = match hook.format.as_deref() {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                problems.push(
                    format!("{path}.format"),
                    format!("'{other}' is not one of: slack, json"),
                );
                continue;
            }
        };
        webhooks.push(Webhook { url, format });
    }
    AlertsConfig {
        webhooks,
        cooldown: Duration::from_secs(cooldown),
        max_per_minute,
        queue,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn webhooks_are_read_and_bad_ones_named() {
        let mut problems = Problems::default();
        let value: toml::Value = r#"
            cooldown_secs = 5
            [[webhooks]]
            url = "https://hooks.example.com/services/T0/B0/x"
            format = "slack"
            [[webhooks]]
            url = "ftp://nope"
            [[webhooks]]
            url = "http://127.0.0.1:9/alerts"
            format = "xml"
        "#
        .parse::<toml::Table>()
        .unwrap()
        .into();
        let config = validate(Some(&value), &mut problems);
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].format, WebhookFormat::Slack);
        assert_eq!(config.cooldown, Duration::from_secs(5));
        let text = problems.to_string();
        assert!(text.contains("alerts.webhooks[1].url"), "{text}");
        assert!(text.contains("alerts.webhooks[2].format"), "{text}");
    }
}
