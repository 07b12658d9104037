//! In-process reloads: what the binary's tests cannot see from outside.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::config::MapEnv;
use crate::lockdown::LockdownState;

async fn gateway(dir: &std::path::Path, text: &str) -> crate::server::Running {
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_file(&path).unwrap();
    let env = MapEnv::default()
        .with("OPENAI_API_KEY", "sk-first-0123456789")
        .with("T_ADMIN", "admin-token-0123456789");
    crate::server::start_from_file(&config, path, Arc::new(env))
        .await
        .unwrap()
}

fn base(dir: &std::path::Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nwatch_config = false\n\
         [storage]\nurl = \"sqlite://{}/w.db\"\n[admin]\ntoken_env = \"T_ADMIN\"\n",
        dir.display()
    )
}

#[tokio::test]
async fn a_reload_during_lockdown_keeps_moderation_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let running = gateway(dir.path(), &base(dir.path())).await;
    let gw = running.gateway.clone();
    let current = || gw.snapshot().moderator.clone();
    // Stored first, as the admin API does, so the store poller agrees.
    let on = LockdownState::new(true, "admin", None);
    crate::lockdown::save(&gw.store, &on).await.unwrap();
    gw.lockdown.apply(on, &gw.limiter, &current);
    assert!(gw.snapshot().moderator.lowered_for_lockdown());

    let outcome = reload(&gw, Trigger::AdminApi).await.unwrap();
    assert!(outcome.reloaded, "{outcome:?}");
    let after = gw.snapshot();
    assert_eq!(after.generation, 2);
    assert!(
        after.moderator.lowered_for_lockdown(),
        "a new moderator, still lowered"
    );

    let off = LockdownState::new(false, "admin", None);
    crate::lockdown::save(&gw.store, &off).await.unwrap();
    gw.lockdown.apply(off, &gw.limiter, &current);
    assert!(!gw.snapshot().moderator.lowered_for_lockdown());
    running.shutdown().await;
}

#[tokio::test]
async fn a_snapshot_taken_before_a_reload_keeps_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let text = base(dir.path());
    let running = gateway(dir.path(), &text).await;
    let gw = running.gateway.clone();
    let before = gw.snapshot();
    std::fs::write(
        dir.path().join("warden.toml"),
        text.replace("[admin]\ntoken_env = \"T_ADMIN\"\n", "") + "[server.nothing]\n",
    )
    .unwrap();
    let rejected = reload(&gw, Trigger::Signal).await.unwrap();
    assert!(!rejected.reloaded);
    assert!(
        Arc::ptr_eq(&before, &gw.snapshot()),
        "a rejected file changes nothing"
    );

    std::fs::write(
        dir.path().join("warden.toml"),
        text.replace("[admin]\ntoken_env = \"T_ADMIN\"\n", ""),
    )
    .unwrap();
    assert!(reload(&gw, Trigger::Signal).await.unwrap().reloaded);
    assert!(
        !before.admin_tokens.is_empty(),
        "the old snapshot is untouched"
    );
    assert!(
        gw.snapshot().admin_tokens.is_empty(),
        "the new one has no admin token"
    );
    running.shutdown().await;
}
