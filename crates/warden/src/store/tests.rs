#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::keys::hash_secret;

/// PostgreSQL for the scale-out tests: the real server on loopback, never skipped.
pub fn postgres_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

fn key(name: &str) -> StoredKey {
    StoredKey {
        name: name.into(),
        secret_hash: hash_secret(name),
        prefix: "wk-abcde".into(),
        end_user: EndUserPolicy::Optional,
        trusted_user_field: true,
        created_at: 1_700_000_000,
        revoked_at: None,
        expires_at: None,
        allowed_models: Some(vec!["gpt-4o*".into()]),
        allowed_endpoints: None,
        previous_hash: None,
        previous_until: None,
    }
}

async fn exercise(store: &Store) {
    store.ping().await.unwrap();
    first_sighting_after_a_strike_sets_first_seen(store).await;
    object_owners_are_recorded_once(store).await;
    let name = unique("k");
    store.insert_key(&key(&name)).await.unwrap();
    assert!(matches!(
        store.insert_key(&key(&name)).await,
        Err(StoreError::DuplicateKey(_))
    ));
    let listed = store.list_keys().await.unwrap();
    let found = listed.iter().find(|k| k.name == name).expect("listed");
    assert_eq!(found.secret_hash, hash_secret(&name));
    assert!(found.trusted_user_field);
    assert_eq!(found.end_user, EndUserPolicy::Optional);

    assert!(store.revoke_key(&name, 5).await.unwrap());
    assert!(
        !store.revoke_key(&name, 6).await.unwrap(),
        "second revoke is a no-op"
    );
    let listed = store.list_keys().await.unwrap();
    assert_eq!(
        listed.iter().find(|k| k.name == name).unwrap().revoked_at,
        Some(5)
    );

    let setting = unique("s");
    assert_eq!(
        store.setting_or_insert(&setting, "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.setting_or_insert(&setting, "second").await.unwrap(),
        "first"
    );

    let before = store.count_events().await.unwrap();
    let event = EventRecord {
        request_id: unique("req"),
        at_ms: 1,
        kind: "request",
        key_name: Some(name.clone()),
        end_user: Some("alice".into()),
        safety_identifier: None,
        client_ip: Some("127.0.0.1".into()),
        endpoint: "chat.completions",
        model: Some("gpt".into()),
        stream: false,
        status: 200,
        outcome: "allowed",
        reason: None,
        latency_us: 10,
        upstream_us: Some(5),
        detail: None,
        ..EventRecord::default()
    };
    store.append_events(&[event.clone(), event]).await.unwrap();
    assert!(store.count_events().await.unwrap() >= before + 2);
    // Written outside the gateway's writer, still chained and verifiable.
    let chains = store.audit_chains().await.unwrap();
    assert!(chains.iter().any(|c| c.last_seq == 2));
}

#[tokio::test]
async fn sqlite_file_store_works_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::Sqlite {
        path: dir.path().join("nested/warden.db"),
    };
    let store = Store::open(&config).await.unwrap();
    exercise(&store).await;
    let count = store.count_events().await.unwrap();
    drop(store);
    let reopened = Store::open(&config).await.unwrap();
    assert_eq!(reopened.count_events().await.unwrap(), count);
}

#[tokio::test]
async fn postgres_store_works() {
    let store = Store::open(&StorageConfig::Postgres {
        url: postgres_url(),
    })
    .await
    .expect("PostgreSQL must run on 127.0.0.1:5432 (see README: test setup)");
    assert_eq!(store.backend(), "postgres");
    exercise(&store).await;
}

/// Regression: a user whose first request earned a strike got their row from the standing
/// write (first_seen_ms 0), and the later sighting never filled it in.
async fn first_sighting_after_a_strike_sets_first_seen(store: &Store) {
    let key = unique("fs");
    let change = StatusChange {
        status: "active",
        until_ms: None,
        reason: None,
        strike_weight: 2.0,
        strike_at_ms: 1_000,
        at_ms: 1_000,
    };
    store
        .set_standing(&key, "u1", "wsi1_x", &change)
        .await
        .unwrap();
    assert_eq!(
        store.user(&key, "u1").await.unwrap().unwrap().first_seen_ms,
        0
    );
    let seen = |at_ms| Sighting {
        key_name: key.clone(),
        end_user: "u1".into(),
        safety_identifier: "wsi1_x".into(),
        at_ms,
    };
    store.record_sightings(&[seen(1_000)]).await.unwrap();
    store.record_sightings(&[seen(5_000)]).await.unwrap();
    let user = store.user(&key, "u1").await.unwrap().unwrap();
    assert_eq!((user.first_seen_ms, user.last_seen_ms), (1_000, 5_000));
    assert_eq!(user.strike_weight, 2.0, "a sighting never touches standing");
}

/// Issue 16: the creator of an object is kept; a second record does not take it over.
async fn object_owners_are_recorded_once(store: &Store) {
    let (mine, theirs, nobody) = (unique("file-a"), unique("file-b"), unique("file-c"));
    let (key_a, key_b) = (unique("ka"), unique("kb"));
    store
        .record_object(&mine, "file", &key_a, Some("alice"), 1)
        .await
        .unwrap();
    store
        .record_object(&mine, "file", &key_b, None, 2)
        .await
        .unwrap();
    store
        .record_object(&theirs, "file", &key_b, None, 3)
        .await
        .unwrap();
    let owner = store.object_owner(&mine).await.unwrap().unwrap();
    assert_eq!(owner.key_name, key_a);
    assert_eq!(owner.end_user.as_deref(), Some("alice"));
    assert!(store.object_owner(&nobody).await.unwrap().is_none());
    let owned = store
        .owned_by(&key_a, &[mine.as_str(), theirs.as_str(), nobody.as_str()])
        .await
        .unwrap();
    assert_eq!(owned.into_iter().collect::<Vec<_>>(), vec![mine.clone()]);
}
