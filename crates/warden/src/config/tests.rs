#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const FULL: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"
max_body_bytes = 20971520

[upstream]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[storage]
url = "sqlite://warden-data/warden.db"

[identity]
safety_identifier_secret_env = "WARDEN_SAFETY_SECRET"

[[keys]]
name = "chat-app"
secret_env = "WARDEN_KEY_CHAT_APP"
upstream_key_env = "OPENAI_API_KEY_CHAT"
openai_project = "proj_abc"
end_user = "required"
trusted_user_field = false
"#;

#[test]
fn the_documented_example_is_valid() {
    let config = Config::from_toml(FULL).unwrap();
    assert_eq!(config.server.max_body_bytes, 20_971_520);
    assert_eq!(config.keys[0].name, "chat-app");
    assert_eq!(config.keys[0].end_user, EndUserPolicy::Required);
    assert_eq!(
        config.storage,
        StorageConfig::Sqlite {
            path: "warden-data/warden.db".into()
        }
    );
    assert_eq!(
        config.upstream.base_url.to_string(),
        "https://api.openai.com/v1"
    );
}

#[test]
fn empty_file_is_the_embedded_default() {
    let config = Config::embedded_default().unwrap();
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert!(!config.upstream.api_key_required);
    assert!(!config.identity.secret_required);
    assert!(config.keys.is_empty());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
[server]
listen = "nowhere"
max_body_bytes = "big"
colour = "blue"

[upstream]
base_url = "ftp://example.com"

[storage]
url = "mysql://x"

[[keys]]
name = "bad name!"
end_user = "sometimes"

[[keys]]
secret_env = "K2"

[extra]
x = 1
"#;
    let problems = Config::from_toml(text).unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "server.listen",
        "server.max_body_bytes",
        "server.colour",
        "upstream.base_url",
        "storage.url",
        "keys[0].name",
        "keys[0].end_user",
        "keys[0].secret_env",
        "keys[1].name",
        "extra",
    ] {
        assert!(paths.contains(&expected), "{expected} not in {paths:?}");
    }
}

#[test]
fn unknown_keys_inside_a_key_table_are_errors() {
    let text = "[[keys]]\nname = \"a\"\nsecret_env = \"A\"\nend_usr = \"required\"\n";
    let problems = Config::from_toml(text).unwrap_err();
    assert_eq!(problems.len(), 1);
    let p = problems.iter().next().unwrap();
    assert_eq!(p.path, "keys[0].end_usr");
    assert!(p.message.contains("unknown key"));
}

#[test]
fn duplicate_key_names_are_errors() {
    let text =
        "[[keys]]\nname = \"a\"\nsecret_env = \"A\"\n[[keys]]\nname = \"a\"\nsecret_env = \"B\"\n";
    let problems = Config::from_toml(text).unwrap_err();
    assert!(problems.iter().any(|p| p.path == "keys[1].name"));
}

#[test]
fn jwt_needs_exactly_one_key_source() {
    let text = "[[keys]]\nname = \"web\"\n[keys.jwt]\nissuer = \"me\"\n";
    let problems = Config::from_toml(text).unwrap_err();
    assert!(
        problems.iter().any(|p| p.path == "keys[0].jwt"),
        "{problems}"
    );
    let ok = "[[keys]]\nname = \"web\"\n[keys.jwt]\nhs256_secret_env = \"S\"\n";
    let config = Config::from_toml(ok).unwrap();
    assert_eq!(config.keys[0].jwt.as_ref().unwrap().user_claim, "sub");
}

#[test]
fn syntax_errors_are_reported() {
    let problems = Config::from_toml("[server\nlisten=").unwrap_err();
    assert!(problems.to_string().contains("not valid TOML"));
}

#[test]
fn secrets_report_missing_environment() {
    let config = Config::from_toml(FULL).unwrap();
    let env = MapEnv::default().with("OPENAI_API_KEY", "sk-upstream");
    let (_, problems, _) = Secrets::load(&config, &env);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"identity.safety_identifier_secret_env"));
    assert!(paths.contains(&"keys[0].secret_env"));
    assert!(paths.contains(&"keys[0].upstream_key_env"));
    assert!(!problems.to_string().contains("sk-upstream"));
}

#[test]
fn implicit_upstream_key_is_only_a_warning() {
    let config = Config::embedded_default().unwrap();
    let (secrets, problems, warnings) = Secrets::load(&config, &MapEnv::default());
    assert!(problems.is_empty());
    assert!(secrets.upstream_default.is_none());
    assert_eq!(warnings.len(), 1);
}

#[test]
fn a_typo_gets_the_likely_key_and_a_stranger_the_list() {
    let problems = Config::from_toml("[server]\nlisen = \"127.0.0.1:1\"\n[limts]\n").unwrap_err();
    let text = problems.to_string();
    assert!(text.contains("did you mean 'listen'?"), "{text}");
    assert!(text.contains("did you mean 'limits'?"), "{text}");
    let problems = Config::from_toml("[server]\ncompletely_else = 1\n").unwrap_err();
    assert!(
        problems.to_string().contains("known keys: listen"),
        "{problems}"
    );
}

/// Every TOML block of the configuration reference (docs/configuration.md) is a config
/// Warden accepts, so the reference cannot drift into keys that do not exist.
#[test]
fn every_block_of_the_configuration_reference_is_valid() {
    let doc = include_str!("../../../../docs/configuration.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").unwrap()])
        .collect();
    assert!(blocks.len() >= 5, "found {} blocks", blocks.len());
    let db = tempfile::NamedTempFile::new().unwrap();
    for block in blocks {
        let text = block.replace(
            "/var/lib/GeoIP/GeoLite2-Country.mmdb",
            &db.path().display().to_string(),
        );
        if let Err(problems) = Config::from_toml(&text) {
            unreachable!("docs/configuration.md block invalid: {problems}\n{block}");
        }
    }
}
