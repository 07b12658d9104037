//! The Warden config file the benchmark writes: which pipeline stages are on for the run.

use std::net::SocketAddr;
use std::path::Path;

/// Limits high enough never to fire at benchmark rates, finite so the counters still run.
const HUGE: u64 = 1_000_000_000;

/// Which of Warden's stages the run exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pipeline {
    /// Authentication, end-user identity and the request rewrite (safety_identifier);
    /// limits, local filters and moderation off. The issue's overhead target.
    Core,
    /// Every stage at its defaults (local filters, jailbreak detection, moderation against the
    /// stand-in, limits), with the limits raised so they count but never refuse.
    Full,
}

impl Pipeline {
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Core => "core",
            Pipeline::Full => "full",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Pipeline::Core => "auth + end-user identity + safety_identifier rewrite; limits, local filters and moderation off",
            Pipeline::Full => "all stages at defaults (filters, jailbreak, moderation via the stand-in, limits raised to 1e9 so they count but never refuse)",
        }
    }
}

/// The config for Warden in front of the stand-in at `standin`, storing into `db`.
pub fn warden_config(pipeline: Pipeline, standin: SocketAddr, db: &Path) -> String {
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[upstream]
base_url = "http://{standin}/v1"
api_key_env = "BENCH_UPSTREAM_KEY"

[storage]
url = "sqlite://{db}"

[identity]
safety_identifier_secret_env = "BENCH_SAFETY_SECRET"

[log]
level = "warn"

[[keys]]
name = "bench"
secret_env = "BENCH_KEY"
end_user = "required"
"#,
        db = db.display()
    );
    text.push_str(match pipeline {
        Pipeline::Core => CORE,
        Pipeline::Full => &FULL_LIMITS,
    });
    text
}

/// Appended for `--event-store false`: events reach the log line and metrics only.
pub const EVENT_STORE_OFF: &str = "\n[events]\nstore = false\n";

/// Appended for the content-safety run's pass-through Warden: streams are relayed as they
/// come instead of being held back and moderated window by window.
pub const OUTPUT_MODERATION_OFF: &str = "\n[safety.moderation.output]\nenabled = false\n";

const CORE: &str = r#"
[limits]
enabled = false

[safety.moderation]
enabled = false

[safety.filters]
enabled = false
"#;

static FULL_LIMITS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rates = format!(
        "requests_per_minute = {HUGE}\nrequests_per_day = {HUGE}\ntokens_per_minute = {HUGE}\n\
         tokens_per_day = {HUGE}\nconcurrency = 100000\n"
    );
    format!(
        "\n[limits.organization]\n{rates}\n[limits.per_key]\n{rates}\n[limits.per_ip]\n{rates}\n\
         [limits.tiers.verified]\n{rates}"
    )
});

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(pipeline: Pipeline) -> toml::Table {
        let text = warden_config(
            pipeline,
            "127.0.0.1:4100".parse().unwrap(),
            Path::new("/tmp/x/warden.db"),
        );
        text.parse().unwrap()
    }

    #[test]
    fn both_profiles_point_warden_at_the_standin_with_the_bench_key() {
        for pipeline in [Pipeline::Core, Pipeline::Full] {
            let c = config(pipeline);
            assert_eq!(
                c["upstream"]["base_url"].as_str(),
                Some("http://127.0.0.1:4100/v1")
            );
            assert_eq!(
                c["storage"]["url"].as_str(),
                Some("sqlite:///tmp/x/warden.db")
            );
            assert_eq!(c["keys"][0]["end_user"].as_str(), Some("required"));
        }
    }

    #[test]
    fn core_turns_the_optional_stages_off_and_full_only_raises_limits() {
        let core = config(Pipeline::Core);
        assert_eq!(core["limits"]["enabled"].as_bool(), Some(false));
        assert_eq!(
            core["safety"]["moderation"]["enabled"].as_bool(),
            Some(false)
        );
        assert_eq!(core["safety"]["filters"]["enabled"].as_bool(), Some(false));

        let full = config(Pipeline::Full);
        assert!(full.get("safety").is_none());
        assert_eq!(
            full["limits"]["per_ip"]["requests_per_minute"].as_integer(),
            Some(1_000_000_000)
        );
        assert_eq!(
            full["limits"]["tiers"]["verified"]["concurrency"].as_integer(),
            Some(100_000)
        );
    }

    #[test]
    fn output_moderation_off_only_touches_the_output_side() {
        let mut text = warden_config(
            Pipeline::Full,
            "127.0.0.1:4100".parse().unwrap(),
            Path::new("/tmp/x/warden.db"),
        );
        text.push_str(OUTPUT_MODERATION_OFF);
        let c: toml::Table = text.parse().unwrap();
        let moderation = c["safety"]["moderation"].as_table().unwrap();
        assert_eq!(moderation["output"]["enabled"].as_bool(), Some(false));
        assert!(
            moderation.get("enabled").is_none(),
            "input moderation stays at its default"
        );
    }
}
