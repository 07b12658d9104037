//! `[spend]`: the price table (USD per 1M tokens, matched by model prefix) and the daily
//! and monthly budgets of the organization, each key and each end user.

use std::collections::HashMap;
use std::time::Duration;

use super::problems::Problems;
use super::schema::section;

section! {
    pub struct RawSpend {
        enabled: bool,
        flush_ms: u64,
        organization: toml::Value,
        per_key: toml::Value,
        per_user: toml::Value,
        keys: toml::Table,
        prices: toml::Table,
    }
}

section! {
    pub struct RawBudget {
        daily_usd: f64,
        monthly_usd: f64,
    }
}

section! {
    pub struct RawPrice {
        input: f64,
        cached_input: f64,
        output: f64,
    }
}

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

/// Caps in USD; `None` is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budget {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.daily_usd.is_none() && self.monthly_usd.is_none()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendConfig {
    pub enabled: bool,
    /// How often counted spend is written to the store (and other replicas' spend read).
    pub flush: Duration,
    pub organization: Budget,
    pub per_key: Budget,
    pub per_user: Budget,
    /// A key's own budget, replacing `per_key` for it.
    pub keys: HashMap<String, Budget>,
    /// (model prefix, price), longest prefix first.
    pub prices: Vec<(String, Price)>,
}

impl SpendConfig {
    /// The price of a model: the longest matching prefix; an unknown model is charged
    /// the table's highest prices, so it cannot slip past a budget.
    pub fn price(&self, model: &str) -> Price {
        self.prices
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix.as_str()))
            .map(|(_, p)| *p)
            .unwrap_or_else(|| self.highest())
    }

    fn highest(&self) -> Price {
        let max = |f: fn(&Price) -> f64| self.prices.iter().map(|(_, p)| f(p)).fold(0.0, f64::max);
        Price {
            input: max(|p| p.input),
            cached_input: max(|p| p.cached_input),
            output: max(|p| p.output),
        }
    }

    pub fn key_budget(&self, key: &str) -> Budget {
        self.keys.get(key).copied().unwrap_or(self.per_key)
    }

    /// Nothing to enforce: no budget anywhere.
    pub fn has_budgets(&self) -> bool {
        !(self.organization.is_empty()
            && self.per_key.is_empty()
            && self.per_user.is_empty()
            && self.keys.values().all(Budget::is_empty))
    }
}

/// The date these default prices were taken from openai.com/api/pricing (standard tier).
pub const PRICES_AS_OF: &str = "2025-08-07";

const fn p(input: f64, cached_input: f64, output: f64) -> Price {
    Price {
        input,
        cached_input,
        output,
    }
}

/// Default prices, USD per 1M tokens (input, cached input, output), as of [`PRICES_AS_OF`].
/// Dated snapshots (`gpt-4o-2024-08-06`) match by prefix.
pub const DEFAULT_PRICES: &[(&str, Price)] = &[
    ("gpt-5-nano", p(0.05, 0.005, 0.40)),
    ("gpt-5-mini", p(0.25, 0.025, 2.00)),
    ("gpt-5", p(1.25, 0.125, 10.00)),
    ("gpt-4.1-nano", p(0.10, 0.025, 0.40)),
    ("gpt-4.1-mini", p(0.40, 0.10, 1.60)),
    ("gpt-4.1", p(2.00, 0.50, 8.00)),
    ("gpt-4o-mini", p(0.15, 0.075, 0.60)),
    ("gpt-4o", p(2.50, 1.25, 10.00)),
    ("gpt-4-turbo", p(10.00, 10.00, 30.00)),
    ("gpt-4", p(30.00, 30.00, 60.00)),
    ("gpt-3.5-turbo", p(0.50, 0.50, 1.50)),
    ("o4-mini", p(1.10, 0.275, 4.40)),
    ("o3-mini", p(1.10, 0.55, 4.40)),
    ("o3", p(2.00, 0.50, 8.00)),
    ("o1-mini", p(1.10, 0.55, 4.40)),
    ("o1", p(15.00, 7.50, 60.00)),
    ("text-embedding-3-small", p(0.02, 0.02, 0.0)),
    ("text-embedding-3-large", p(0.13, 0.13, 0.0)),
    ("text-embedding-ada-002", p(0.10, 0.10, 0.0)),
    ("omni-moderation", p(0.0, 0.0, 0.0)),
    ("text-moderation", p(0.0, 0.0, 0.0)),
];

const DEFAULT_FLUSH: Duration = Duration::from_secs(1);

pub fn validate(raw: Option<&toml::Value>, problems: &mut Problems) -> SpendConfig {
    let empty = toml::Value::Table(toml::Table::new());
    let section = RawSpend::read(raw.unwrap_or(&empty), "spend", problems);
    let budget = |v: Option<&toml::Value>, path: &str, problems: &mut Problems| {
        let raw = RawBudget::read(v.unwrap_or(&empty), path, problems);
        let usd = |value: Option<f64>, field: &str, problems: &mut Problems| match value {
            Some(v) if v.is_finite() && v >= 0.0 => Some(v),
            Some(v) => {
                problems.push(
                    format!("{path}.{field}"),
                    format!("must be a number of USD >= 0 (found {v})"),
                );
                None
            }
            None => None,
        };
        Budget {
            daily_usd: usd(raw.daily_usd, "daily_usd", problems),
            monthly_usd: usd(raw.monthly_usd, "monthly_usd", problems),
        }
    };
    let mut keys = HashMap::new();
    for (name, value) in section.keys.iter().flatten() {
        keys.insert(
            name.clone(),
            budget(Some(value), &format!("spend.keys.{name}"), problems),
        );
    }
    let mut prices: HashMap<String, Price> = DEFAULT_PRICES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), *p))
        .collect();
    for (model, value) in section.prices.iter().flatten() {
        let path = format!("spend.prices.\"{model}\"");
        let raw = RawPrice::read(value, &path, problems);
        let default = prices.get(model.as_str()).copied();
        let field =
            |v: Option<f64>, d: Option<f64>, name: &str, problems: &mut Problems| match v.or(d) {
                Some(v) if v.is_finite() && v >= 0.0 => v,
                Some(v) => {
                    problems.push(
                        format!("{path}.{name}"),
                        format!("must be >= 0 (found {v})"),
                    );
                    0.0
                }
                None => {
                    problems.push(format!("{path}.{name}"), "missing (USD per 1M tokens)");
                    0.0
                }
            };
        let input = field(raw.input, default.map(|p| p.input), "input", problems);
        let output = field(raw.output, default.map(|p| p.output), "output", problems);
        // Uncached price when a model has no cache discount.
        let cached_input = raw
            .cached_input
            .or(default.map(|p| p.cached_input))
            .unwrap_or(input);
        prices.insert(model.clone(), p(input, cached_input, output));
    }
    let mut prices: Vec<(String, Price)> = prices.into_iter().collect();
    prices.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    let flush = match section.flush_ms {
        Some(0) => {
            problems.push("spend.flush_ms", "must be greater than 0");
            DEFAULT_FLUSH
        }
        Some(ms) => Duration::from_millis(ms),
        None => DEFAULT_FLUSH,
    };
    SpendConfig {
        enabled: section.enabled.unwrap_or(true),
        flush,
        organization: budget(
            section.organization.as_ref(),
            "spend.organization",
            problems,
        ),
        per_key: budget(section.per_key.as_ref(), "spend.per_key", problems),
        per_user: budget(section.per_user.as_ref(), "spend.per_user", problems),
        keys,
        prices,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> (SpendConfig, Problems) {
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        let mut problems = Problems::default();
        let config = validate(value.get("spend"), &mut problems);
        (config, problems)
    }

    #[test]
    fn longest_prefix_wins_and_unknown_models_pay_the_most() {
        let (config, problems) = parse("");
        assert!(problems.is_empty());
        assert_eq!(config.price("gpt-4o-mini-2024-07-18").input, 0.15);
        assert_eq!(config.price("gpt-4o-2024-08-06").input, 2.50);
        assert_eq!(config.price("gpt-5-nano").output, 0.40);
        let unknown = config.price("mystery-model");
        assert_eq!(unknown.output, 60.0);
        assert!(!config.has_budgets());
    }

    #[test]
    fn budgets_and_price_overrides_are_read_with_paths() {
        let (config, problems) = parse(
            r#"
[spend.organization]
daily_usd = 100
monthly_usd = 2000.5
[spend.per_user]
daily_usd = 0.5
[spend.keys.app]
monthly_usd = 10
[spend.prices."my-finetune"]
input = 3
output = 12
[spend.prices."gpt-4o-mini"]
output = 0.7
"#,
        );
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(config.organization.monthly_usd, Some(2000.5));
        assert_eq!(config.per_user.daily_usd, Some(0.5));
        assert_eq!(config.key_budget("app").monthly_usd, Some(10.0));
        assert_eq!(config.key_budget("other"), Budget::default());
        let ft = config.price("my-finetune:v2");
        assert_eq!((ft.input, ft.cached_input, ft.output), (3.0, 3.0, 12.0));
        let mini = config.price("gpt-4o-mini");
        assert_eq!((mini.input, mini.output), (0.15, 0.7));
        assert!(config.has_budgets());

        let (_, problems) =
            parse("[spend.per_key]\ndaily_usd = -1\nweekly_usd = 3\n[spend.prices.x]\ninput = 1\n");
        let text = problems.to_string();
        assert!(text.contains("spend.per_key.daily_usd"), "{text}");
        assert!(text.contains("spend.per_key.weekly_usd"), "{text}");
        assert!(text.contains("spend.prices.\"x\".output"), "{text}");
    }
}
