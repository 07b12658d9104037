//! Which settings of a reloaded file only take effect after a restart: the listeners, the
//! store, and the services that keep state across requests (upstream client and its
//! pool, Redis, the event writer, detectors, alerts, strikes, spend, webhooks).

use std::fmt::Debug;

use crate::config::Config;

/// Key paths whose value in `new` differs from the config the process started with.
/// Reloads apply everything else and report these; they are compared with the start-up
/// config, so a setting stays listed until the process is restarted.
pub fn restart_required(running: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    // Compared through `Debug`: every config type has it (not all have `PartialEq`), it
    // shows every field, and the config holds names of secrets, never their values.
    let mut check = |path: &str, a: &dyn Debug, b: &dyn Debug| {
        if format!("{a:?}") != format!("{b:?}") {
            out.push(path.to_owned());
        }
    };
    let (a, b) = (running, new);
    check("server.listen", &a.server.listen, &b.server.listen);
    check(
        "server.admin_listen",
        &a.server.admin_listen,
        &b.server.admin_listen,
    );
    check(
        "server.connections",
        &a.server.connections,
        &b.server.connections,
    );
    check(
        "server.watch_config",
        &a.server.watch_config,
        &b.server.watch_config,
    );
    let (ua, ub) = (&a.upstream, &b.upstream);
    check("upstream.base_url", &ua.base_url, &ub.base_url);
    check("upstream.openai_beta", &ua.openai_beta, &ub.openai_beta);
    check(
        "upstream.master_key_env",
        &ua.master_key_env,
        &ub.master_key_env,
    );
    check("upstream.organization", &ua.organization, &ub.organization);
    check("upstream.project", &ua.project, &ub.project);
    check(
        "upstream.connect_timeout_secs",
        &ua.connect_timeout,
        &ub.connect_timeout,
    );
    check("upstream.timeout_secs", &ua.timeout, &ub.timeout);
    check("upstream (retries and breaker)", &ua.retries, &ub.retries);
    check("upstream (pacing)", &ua.pacing, &ub.pacing);
    check("storage", &a.storage, &b.storage);
    check(
        "storage.ready_without_store",
        &a.ready_without_store,
        &b.ready_without_store,
    );
    check("identity", &a.identity, &b.identity);
    check("log", &a.log, &b.log);
    check("cluster", &a.cluster, &b.cluster);
    check("enforcement", &a.enforcement, &b.enforcement);
    check("openai_notices", &a.notices, &b.notices);
    check("abuse", &a.abuse, &b.abuse);
    check("alerts", &a.alerts, &b.alerts);
    check("lockdown", &a.lockdown, &b.lockdown);
    check("events", &a.events, &b.events);
    check("spend", &a.spend, &b.spend);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn lists_only_the_settings_a_reload_cannot_apply() {
        let running = config("[server]\nlisten = \"127.0.0.1:9000\"\n");
        let reloadable = config(
            "[server]\nlisten = \"127.0.0.1:9000\"\nmax_body_bytes = 1000\n\
             [limits.per_key]\nrequests_per_minute = 5\n[geo]\nunknown = \"block\"\n",
        );
        assert!(restart_required(&running, &reloadable).is_empty());
        let moved = config(
            "[server]\nlisten = \"127.0.0.1:9001\"\n[storage]\nurl = \"sqlite://other.db\"\n\
             [upstream]\ntimeout_secs = 5\n",
        );
        assert_eq!(
            restart_required(&running, &moved),
            ["server.listen", "upstream.timeout_secs", "storage"]
        );
    }
}
