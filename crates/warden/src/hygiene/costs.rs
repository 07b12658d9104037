//! Real spend from OpenAI's Costs API, per project and UTC day, next to Warden's own
//! estimate (the spend counters: usage × the price table). Warden's estimate is kept for
//! the organization as a whole, so drift is judged on the sum over the projects Warden's
//! keys live in; a complete day whose real spend exceeds the estimate by more than
//! `cost_drift_ratio` (and `cost_drift_min_usd`) alerts: the price table is out of date,
//! or traffic reached OpenAI outside Warden.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;

use super::client::AdminClient;
use super::{Hygiene, Status};
use crate::alerts::Severity;
use crate::spend::period::Periods;
use crate::spend::Scope;

/// Days read back (today included).
const DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize)]
pub struct DayCost {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Real spend per project (USD).
    pub projects: BTreeMap<String, f64>,
    /// The sum over the projects Warden's keys are in.
    pub openai_usd: f64,
    /// Warden's estimate for the organization.
    pub warden_usd: f64,
    /// The day is over (only complete days can alert).
    pub complete: bool,
}

impl Hygiene {
    pub(super) async fn costs(
        &self,
        client: &AdminClient,
        status: &mut Status,
    ) -> anyhow::Result<()> {
        let now = crate::events::now_ms() / 1000;
        let today = now - now.rem_euclid(86_400);
        let start = today - (DAYS - 1) * 86_400;
        let buckets = client.costs(start, today + 86_400).await?;
        let ours: BTreeSet<&str> = if self.config.projects.is_empty() {
            status.managed.iter().map(|m| m.project.as_str()).collect()
        } else {
            self.config.projects.iter().map(String::as_str).collect()
        };
        let periods: Vec<String> = (0..DAYS)
            .map(|d| Periods::at(start + d * 86_400).day)
            .collect();
        let refs: Vec<&str> = periods.iter().map(String::as_str).collect();
        let estimates: BTreeMap<String, f64> = self
            .store
            .load_spend(&refs)
            .await?
            .into_iter()
            .filter(|(k, _)| k.scope == Scope::Organization)
            .map(|(k, nano)| (k.period, nano as f64 / 1e9))
            .collect();
        for bucket in buckets {
            let day = bucket.start_time - bucket.start_time.rem_euclid(86_400);
            let label = Periods::at(day).day;
            let mut projects = BTreeMap::new();
            for result in &bucket.results {
                let usd = result.amount.as_ref().map_or(0.0, |a| a.value);
                let project = result.project_id.clone().unwrap_or_else(|| "(none)".into());
                *projects.entry(project).or_insert(0.0) += usd;
            }
            let openai_usd: f64 = projects
                .iter()
                .filter(|(p, _)| ours.contains(p.as_str()))
                .map(|(_, usd)| usd)
                .sum();
            let warden_usd = estimates.get(&label).copied().unwrap_or(0.0);
            let complete = day + 86_400 <= now;
            let cost = DayCost {
                day: label.trim_start_matches('d').to_owned(),
                projects,
                openai_usd,
                warden_usd,
                complete,
            };
            if complete
                && drifted(
                    openai_usd,
                    warden_usd,
                    self.config.cost_drift_ratio,
                    self.config.cost_drift_min_usd,
                )
            {
                self.note(super::Note {
                    kind: "openai_cost_drift",
                    dedup: format!("openai_cost_drift:{}", cost.day),
                    severity: Severity::Warning,
                    key: None,
                    title: format!("OpenAI billed ${openai_usd:.2} on {} where Warden estimated ${warden_usd:.2}", cost.day),
                    text: "Real spend is well above Warden's estimate: the price table ([spend.prices]) may be out of date, or traffic reached OpenAI outside Warden (see the reconciliation and unmanaged keys).".into(),
                    fields: json!({"day": cost.day, "openai_usd": openai_usd, "warden_usd": warden_usd, "projects": cost.projects}),
                    event: self.first_time(format!("cost:{}", cost.day)),
                });
            }
            status.costs.push(cost);
        }
        Ok(())
    }
}

/// Real spend above the estimate by more than `ratio` of it and at least `min_usd`.
fn drifted(openai: f64, warden: f64, ratio: f64, min_usd: f64) -> bool {
    let over = openai - warden;
    over > min_usd && over > ratio * warden
}

#[cfg(test)]
mod tests {
    use super::drifted;

    #[test]
    fn drift_needs_both_the_ratio_and_the_floor() {
        assert!(!drifted(10.5, 10.0, 0.2, 1.0), "5% over");
        assert!(!drifted(0.9, 0.1, 0.2, 1.0), "under a dollar");
        assert!(drifted(15.0, 10.0, 0.2, 1.0));
        assert!(
            !drifted(8.0, 10.0, 0.2, 1.0),
            "Warden over-estimates: no drift alert"
        );
    }
}
