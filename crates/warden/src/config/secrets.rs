//! Reads every secret the config names (environment variables, key files) in one place,
//! so start-up and `check-config` report all that is missing at once.

use super::{Config, EnvSource, JwtKeySource, Problems};
use crate::secret::Secret;

/// Key material for verifying end-user tokens.
#[derive(Debug, Clone)]
pub enum JwtMaterial {
    Hs256(Secret),
    Rs256Pem(Vec<u8>),
    Jwks(String),
}

#[derive(Debug, Clone, Default)]
pub struct KeySecrets {
    /// The Bearer value clients present; `None` for token-only keys.
    pub client_secret: Option<Secret>,
    /// The key's own upstream key; `None` means the default upstream key.
    pub upstream: Option<Secret>,
    pub jwt: Option<JwtMaterial>,
}

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub upstream_default: Option<Secret>,
    pub safety_identifier: Option<Secret>,
    /// One entry per `config.keys`, same order.
    pub keys: Vec<KeySecrets>,
    /// The admin API's bearer token from `[admin] token_env`.
    pub admin_token: Option<Secret>,
    /// OpenAI's webhook signing secret (`whsec_…`) from `[openai_notices] secret_env`.
    pub notice_secret: Option<Secret>,
    /// A key allowed to read safety cases; falls back to the upstream key.
    pub case_key: Option<Secret>,
    /// The vault's master key, when set.
    pub master_key: Option<Secret>,
    /// OpenAI's Admin key from `[openai_admin] key_env`: Admin, Usage and Costs APIs
    /// only, never inference.
    pub openai_admin_key: Option<Secret>,
}

impl Secrets {
    /// Problems make start-up fail; warnings are printed and serving goes on.
    pub fn load(config: &Config, env: &dyn EnvSource) -> (Secrets, Problems, Vec<String>) {
        let mut problems = Problems::default();
        let mut warnings = Vec::new();
        let upstream_env = &config.upstream.api_key_env;
        let mut upstream_default = env.get(upstream_env).map(Secret::new);
        if let Some(path) = &config.upstream.api_key_file {
            match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => {
                    upstream_default = Some(Secret::new(text.trim().to_owned()))
                }
                Ok(_) => problems.push(
                    "upstream.api_key_file",
                    format!("{} is empty", path.display()),
                ),
                Err(err) => problems.push(
                    "upstream.api_key_file",
                    format!("cannot read {}: {err}", path.display()),
                ),
            }
        }
        let master_key = env.get(&config.upstream.master_key_env).map(Secret::new);
        if let Some(key) = &master_key {
            if crate::vault::MasterKey::parse(key.expose()).is_none() {
                problems.push(
                    "upstream.master_key_env",
                    format!(
                        "{} must be 32 random bytes in base64 (e.g. `openssl rand -base64 32`)",
                        config.upstream.master_key_env
                    ),
                );
            }
        }
        if upstream_default.is_none() && config.upstream.api_key_file.is_none() {
            let text = format!(
                "environment variable {upstream_env} is not set: requests on keys without their own upstream key will get 503"
            );
            if config.upstream.api_key_required {
                problems.push("upstream.api_key_env", text);
            } else {
                warnings.push(format!("upstream.api_key_env: {text}"));
            }
        }
        let safety_env = &config.identity.safety_identifier_secret_env;
        let safety_identifier = env.get(safety_env).map(Secret::new);
        match &safety_identifier {
            None if config.identity.secret_required => problems.push(
                "identity.safety_identifier_secret_env",
                format!("environment variable {safety_env} is not set"),
            ),
            Some(s) if s.expose().len() < 16 => problems.push(
                "identity.safety_identifier_secret_env",
                format!(
                    "{safety_env} must be at least 16 characters so identifiers cannot be guessed"
                ),
            ),
            _ => {}
        }

        let admin_token = config.admin.token_env.as_deref().and_then(|name| {
            let token = required(env, &mut problems, "admin", "token_env", name)?;
            if token.expose().len() < 16 {
                problems.push(
                    "admin.token_env",
                    format!("{name} must be at least 16 characters"),
                );
            }
            Some(token)
        });
        let notice_secret = env.get(&config.notices.secret_env).map(Secret::new);
        if let Some(secret) = &notice_secret {
            if crate::notices::signature::decode_secret(secret.expose()).is_none() {
                problems.push(
                    "openai_notices.secret_env",
                    format!(
                        "{} must be OpenAI's webhook secret: 'whsec_' followed by base64",
                        config.notices.secret_env
                    ),
                );
            }
        }
        let case_key = match config.notices.case_key_env.as_deref() {
            Some(name) => required(env, &mut problems, "openai_notices", "case_key_env", name),
            None => None,
        };

        let openai_admin_key = config
            .openai_admin
            .key_env
            .as_deref()
            .and_then(|name| required(env, &mut problems, "openai_admin", "key_env", name));

        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let path = format!("keys[{i}]");
                let client_secret = key
                    .secret_env
                    .as_deref()
                    .and_then(|n| required(env, &mut problems, &path, "secret_env", n));
                let upstream = key
                    .upstream_key_env
                    .as_deref()
                    .and_then(|n| required(env, &mut problems, &path, "upstream_key_env", n));
                let jwt = key.jwt.as_ref().and_then(|jwt| match &jwt.key {
                    JwtKeySource::Hs256SecretEnv(name) => {
                        required(env, &mut problems, &path, "jwt.hs256_secret_env", name)
                            .map(JwtMaterial::Hs256)
                    }
                    JwtKeySource::Rs256PublicKeyFile(file) => match std::fs::read(file) {
                        Ok(pem) => Some(JwtMaterial::Rs256Pem(pem)),
                        Err(err) => {
                            problems.push(
                                format!("{path}.jwt.rs256_public_key_file"),
                                format!("cannot read {}: {err}", file.display()),
                            );
                            None
                        }
                    },
                    JwtKeySource::JwksFile(file) => match std::fs::read_to_string(file) {
                        Ok(text) => Some(JwtMaterial::Jwks(text)),
                        Err(err) => {
                            problems.push(
                                format!("{path}.jwt.jwks_file"),
                                format!("cannot read {}: {err}", file.display()),
                            );
                            None
                        }
                    },
                });
                if let Some(secret) = &client_secret {
                    if secret.expose().len() < 16 {
                        problems.push(
                            format!("{path}.secret_env"),
                            "the key value must be at least 16 characters",
                        );
                    }
                }
                KeySecrets {
                    client_secret,
                    upstream,
                    jwt,
                }
            })
            .collect();

        (
            Secrets {
                upstream_default,
                safety_identifier,
                keys,
                admin_token,
                notice_secret,
                case_key,
                master_key,
                openai_admin_key,
            },
            problems,
            warnings,
        )
    }
}

fn required(
    env: &dyn EnvSource,
    problems: &mut Problems,
    path: &str,
    field: &str,
    name: &str,
) -> Option<Secret> {
    let value = env.get(name).map(Secret::new);
    if value.is_none() {
        problems.push(
            format!("{path}.{field}"),
            format!("environment variable {name} is not set"),
        );
    }
    value
}
