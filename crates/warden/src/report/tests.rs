#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::StorageConfig;
use crate::events::{EventRecord, EventSink, StoreSink};

fn event(kind: &'static str, reason: Option<&str>, at_ms: i64) -> EventRecord {
    EventRecord {
        request_id: format!("wrq_{at_ms}"),
        at_ms,
        kind,
        endpoint: "chat.completions",
        outcome: "allowed",
        reason: reason.map(str::to_owned),
        end_user: Some("mallory".into()),
        key_name: Some("app".into()),
        ..EventRecord::default()
    }
}

/// Kinds and reasons written by other parts of Warden (strikes and bans, geo policy,
/// admin API) show up without the report knowing them in advance.
#[tokio::test]
async fn counts_any_kind_and_reason_it_finds() {
    let store = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
    let sink = StoreSink::new(store.clone(), std::time::Duration::from_secs(60));
    let mut geo = event("request", Some(GEO_REASON), 1_000);
    geo.outcome = "blocked";
    geo.status = 403;
    let mut budget = event("request", Some("budget_exceeded"), 1_001);
    budget.outcome = "blocked";
    let mut fail_open = event("flag", Some("fail_open"), 1_002);
    fail_open.detail =
        Some(r#"{"flags":[{"stage":"moderation","action":"fail_open","rule":"timeout"}]}"#.into());
    let mut ban = event("enforcement", Some("ban"), 1_004);
    ban.detail = Some(r#"{"strikes":3}"#.into());
    let batch = vec![
        geo,
        budget,
        fail_open,
        event("enforcement", Some("strike"), 1_003),
        ban,
        event("admin", Some("unban"), 1_005),
        event("case", Some("opened"), 1_006),
        event("enforcement", Some("warn"), 5_000), // outside the period
    ];
    sink.write(&batch).await;

    let r = build(&store, 1_000, 2_000).await.unwrap();
    assert_eq!(r.requests.total, 2);
    assert_eq!(r.geo_refusals, 1);
    assert_eq!(r.rate_limit_refusals.by_reason["budget_exceeded"], 1);
    assert_eq!(r.blocks.by_reason[GEO_REASON], 1);
    assert_eq!(r.fail_open.incidents, 1);
    assert_eq!(r.fail_open.by_reason["moderation:timeout"], 1);
    assert_eq!(
        r.fail_open.first_at.as_deref(),
        Some("1970-01-01T00:00:01.002Z")
    );
    assert_eq!(r.enforcement.total, 2);
    assert_eq!(r.enforcement.by_action["ban"], 1);
    let listed: Vec<&str> = r
        .enforcement
        .list
        .iter()
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(listed, ["strike", "ban"], "oldest first");
    assert_eq!(r.enforcement.list[1].end_user.as_deref(), Some("mallory"));
    assert_eq!(r.enforcement.list[1].detail.as_ref().unwrap()["strikes"], 3);
    assert_eq!(r.admin.by_action["unban"], 1);
    assert_eq!(r.events_by_kind["case"]["opened"], 1);
    assert!(r.audit_chain.ok, "{}", r.audit_chain.summary);
    assert_eq!(r.audit_chain.events_verified, 8);

    let html = render::render(&r, render::Format::Html);
    assert!(html.contains("<td>ban</td>") && html.contains("mallory"));
    let md = render::render(&r, render::Format::Md);
    assert!(md.contains("| strike | 1 |"), "{md}");
}

/// A retention cut deletes a chain's oldest events and leaves a checkpoint; the rest
/// still verifies, and tampering after the cut is still found.
#[tokio::test]
async fn a_retention_cut_keeps_the_chain_verifiable() {
    let store = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
    let sink = StoreSink::new(store.clone(), std::time::Duration::from_secs(60));
    let batch: Vec<EventRecord> = (0..10).map(|i| event("request", None, 1_000 + i)).collect();
    sink.write(&batch[..4]).await;
    sink.write(&batch[4..]).await;
    assert!(verify::verify(&store).await.unwrap().ok());

    let deleted = store.cut_events_before(1_005, 9_999).await.unwrap();
    assert_eq!(deleted, 5);
    let result = verify::verify(&store).await.unwrap();
    assert!(result.ok(), "{}", result.summary());
    assert_eq!(result.chains[0].starts_after, 5);
    assert_eq!(result.events(), 5);

    // Deleting the first event left after the cut is a broken link at the next one.
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    sqlx::query("DELETE FROM events WHERE chain_seq = 6")
        .execute(pool)
        .await
        .unwrap();
    let result = verify::verify(&store).await.unwrap();
    assert!(!result.ok());
    let (_, broken) = result.first_broken().unwrap();
    assert_eq!(broken.seq, 7);
    assert!(broken.why.contains("expected seq 6"), "{}", broken.why);
}

#[tokio::test]
async fn expired_excerpts_are_swept_and_events_stay() {
    let store = Store::open(&StorageConfig::SqliteMemory).await.unwrap();
    let sink = StoreSink::new(store.clone(), std::time::Duration::ZERO);
    let mut flagged = event("flag", Some("flag"), 1_000);
    flagged.excerpt = Some("you are [REDACTED:email] FLAG:harassment".into());
    sink.write(&[flagged]).await;
    assert_eq!(store.excerpts_of("wrq_1000").await.unwrap().len(), 1);
    let config = crate::config::events::EventsConfig::default();
    crate::events::sweeper::sweep(&store, &config).await;
    assert!(store.excerpts_of("wrq_1000").await.unwrap().is_empty());
    assert_eq!(store.count_events().await.unwrap(), 1);
    assert!(verify::verify(&store).await.unwrap().ok());
}
