//! Works through queued deliveries: claim, fetch the case (with retries and backoff),
//! map the identifier to a user, act per policy, record. Several replicas may run it; a
//! claim is an atomic update, so each attempt happens once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Notices, DEACTIVATION_EVENT};
use crate::config::enforcement::NoticeAction;
use crate::enforcement::{Action, Actor};
use crate::events::{now_ms, EventRecord};
use crate::store::{Delivery, SafetyCase, StoreError};

/// How long a claimed attempt may take before another replica (or this one, restarted)
/// may retry it; well over `FETCH_TIMEOUT` plus the store writes.
const LEASE_MS: i64 = 15_000;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_POLL: Duration = Duration::from_millis(500);
const MAX_CASE_BYTES: usize = 256 * 1024;

enum Fetched {
    Case(Value),
    /// Worth retrying (network, 5xx, 429, not visible yet).
    Retry(String),
}

impl Notices {
    /// Runs the worker until the process ends.
    pub fn spawn_worker(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(notices) = me.upgrade() else { return };
                if let Err(err) = notices.work_once().await {
                    tracing::warn!(%err, "safety notice worker: store unavailable");
                }
                let _ = tokio::time::timeout(IDLE_POLL, notices.wake.notified()).await;
            }
        });
    }

    async fn work_once(&self) -> Result<(), StoreError> {
        loop {
            let now = now_ms();
            let due = self.store.due_deliveries(now, 16).await?;
            if due.is_empty() {
                return Ok(());
            }
            for delivery in due {
                if self
                    .store
                    .claim_delivery(&delivery.webhook_id, now, now + LEASE_MS)
                    .await?
                {
                    self.attempt(&delivery).await?;
                }
            }
        }
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let attempt = delivery.attempts + 1;
        let case_id = delivery.case_id.clone().unwrap_or_default();
        if let Some(done) = self.store.case(&case_id).await? {
            // Another delivery of the same case was acted on already.
            tracing::info!(case_id, action = %done.action, "safety case already handled");
            return self.finish(delivery, "done", None).await;
        }
        match self.fetch(&case_id).await {
            Fetched::Case(case) => {
                self.act_on(delivery, &case_id, &case).await?;
                self.finish(delivery, "done", None).await
            }
            Fetched::Retry(why) if attempt >= i64::from(self.config.fetch_attempts) => {
                tracing::error!(case_id, attempts = attempt, %why, "could not fetch an OpenAI safety case; giving up");
                self.record(&case_id, "failed", &why, json!({"attempts": attempt}), None);
                self.enforcement.alert(crate::alerts::Alert::new(
                    "safety_case_unfetched",
                    format!("case-failed:{case_id}"),
                    crate::alerts::Severity::Critical,
                    format!("OpenAI safety case {case_id} could not be read"),
                    format!("Warden gave up fetching case {case_id} after {attempt} attempts ({why}); its end user was not acted on. Check the case key's api.safety.read permission."),
                    json!({"case_id": case_id, "attempts": attempt, "error": why}),
                ));
                self.finish(delivery, "failed", Some(&why)).await
            }
            Fetched::Retry(why) => {
                let backoff = backoff_ms(attempt);
                tracing::warn!(case_id, attempt, %why, retry_in_ms = backoff, "safety case fetch failed; retrying");
                self.store
                    .settle_delivery(
                        &delivery.webhook_id,
                        "pending",
                        now_ms() + backoff,
                        Some(&why),
                        None,
                    )
                    .await
            }
        }
    }

    async fn finish(
        &self,
        delivery: &Delivery,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.store
            .settle_delivery(&delivery.webhook_id, state, now, error, Some(now))
            .await
    }

    async fn fetch(&self, case_id: &str) -> Fetched {
        let path = format!("/v1/safety/cases/{case_id}");
        let call = self
            .upstream
            .get_internal(&path, self.case_auth.as_ref(), MAX_CASE_BYTES);
        let Ok(answer) = tokio::time::timeout(FETCH_TIMEOUT, call).await else {
            return Fetched::Retry(format!("GET {path} timed out"));
        };
        match answer {
            Ok((status, body)) if status.is_success() => {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(case) if case["entity_identifier"].is_string() => Fetched::Case(case),
                    _ => Fetched::Retry("the case is not a safety.case object".into()),
                }
            }
            Ok((status, _)) => Fetched::Retry(format!("GET {path} answered {status}")),
            Err(err) => Fetched::Retry(format!("GET {path}: {err}")),
        }
    }

    async fn act_on(
        &self,
        delivery: &Delivery,
        case_id: &str,
        case: &Value,
    ) -> Result<(), StoreError> {
        let identifier = case["entity_identifier"].as_str().unwrap_or_default();
        let policy_reason = case["reason"].as_str().map(str::to_owned);
        let notice_type = match case["notice"]["type"].as_str() {
            Some(t) => t.to_owned(),
            None if delivery.event_type == DEACTIVATION_EVENT => "deactivation".into(),
            None => "warning".into(),
        };
        let policy = if notice_type == "deactivation" {
            self.config.deactivation_action
        } else {
            self.config.warning_action
        };
        let mut user = self.store.user_by_safety_identifier(identifier).await?;
        if user.is_none() {
            // Seen in the last second but not flushed yet.
            self.enforcement.flush_sightings().await;
            user = self.store.user_by_safety_identifier(identifier).await?;
        }
        let reason = format!(
            "OpenAI {notice_type} {case_id}{}",
            policy_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let action = match (&user, policy) {
            (None, _) => "unmapped",
            (Some(_), NoticeAction::None) => "none",
            (Some(u), NoticeAction::Suspend) => {
                self.sanction(
                    u,
                    Action::Suspend(self.config.warning_suspend_for),
                    &reason,
                    case_id,
                )
                .await?;
                "suspend"
            }
            (Some(u), NoticeAction::Ban) => {
                self.sanction(u, Action::Ban, &reason, case_id).await?;
                "ban"
            }
        };
        let record = SafetyCase {
            case_id: case_id.to_owned(),
            notice_type: notice_type.clone(),
            reason: policy_reason.clone(),
            safety_identifier: Some(identifier.to_owned()),
            key_name: user.as_ref().map(|u| u.key_name.clone()),
            end_user: user.as_ref().map(|u| u.end_user.clone()),
            action: action.into(),
            received_ms: delivery.received_ms,
            acted_ms: now_ms(),
            webhook_id: delivery.webhook_id.clone(),
        };
        self.store.record_case(&record).await?;
        let mapped = user.is_some();
        if mapped {
            tracing::warn!(case_id, notice_type, action, key = ?record.key_name, end_user = ?record.end_user, "OpenAI safety notice acted on");
        } else {
            tracing::error!(case_id, notice_type, identifier, "OpenAI safety notice names an identifier Warden has no record of (user not seen since the mapping was kept, or not sent through Warden)");
            self.enforcement.alert(crate::alerts::Alert::new(
                "safety_case_unmapped",
                format!("case-unmapped:{case_id}"),
                crate::alerts::Severity::Critical,
                format!("OpenAI {notice_type} {case_id} names an unknown end user"),
                format!("Case {case_id} names safety_identifier {identifier}, which Warden has no record of: the user has not been seen since the mapping was kept, or did not come through Warden. Nothing was done."),
                json!({"case_id": case_id, "safety_identifier": identifier, "notice": notice_type}),
            ));
        }
        self.record(
            case_id,
            action,
            &notice_type,
            json!({
                "case_id": case_id,
                "policy_reason": policy_reason,
                "safety_identifier": identifier,
                "mapped": mapped,
                "note": (!mapped).then_some("no Warden record of this identifier: the user has not been seen since the mapping was kept, or did not come through Warden"),
            }),
            user.as_ref().map(|u| (u.key_name.clone(), u.end_user.clone())),
        );
        Ok(())
    }

    async fn sanction(
        &self,
        user: &crate::store::StoredUser,
        action: Action,
        reason: &str,
        case_id: &str,
    ) -> Result<(), StoreError> {
        match self
            .enforcement
            .act(
                &user.key_name,
                &user.end_user,
                action,
                reason,
                Actor::OpenAi(case_id.to_owned()),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(crate::enforcement::ActionError::Store(err)) => Err(err),
            Err(other) => {
                tracing::error!(%other, case_id, "could not act on a safety case");
                Ok(())
            }
        }
    }

    fn record(
        &self,
        case_id: &str,
        outcome: &'static str,
        reason: &str,
        detail: Value,
        user: Option<(String, String)>,
    ) {
        let (key_name, end_user) = user.unzip();
        self.events.record(EventRecord {
            request_id: format!("wcs_{:032x}", fastrand::u128(..)),
            at_ms: now_ms(),
            kind: "case",
            key_name,
            end_user,
            endpoint: "safety/cases",
            outcome,
            reason: Some(reason.to_owned()),
            detail: Some(
                match detail {
                    Value::Object(mut map) => {
                        map.insert("case_id".into(), json!(case_id));
                        Value::Object(map)
                    }
                    other => other,
                }
                .to_string(),
            ),
            ..Default::default()
        });
    }
}

/// 250 ms doubling per attempt, capped at a minute, with ±25 % jitter.
fn backoff_ms(attempt: i64) -> i64 {
    let base = 250i64
        .saturating_mul(1i64 << attempt.clamp(1, 16).saturating_sub(1))
        .min(60_000);
    let jitter = fastrand::i64(-(base / 4)..=(base / 4));
    base + jitter
}
