//! End-user tokens signed with RS256, verified from a PEM public key or a JWKS document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn rs256_token(sub: &str, kid: Option<&str>, private_pem: &[u8]) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let claims = serde_json::json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 600, "tier": "verified"});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private_pem).unwrap(),
    )
    .unwrap()
}

fn start() -> Warden {
    Warden::start_with(Options {
        extra_toml: format!(
            r#"
[[keys]]
name = "mobile"
end_user = "required"
[keys.jwt]
rs256_public_key_file = "{FIXTURES}/jwt-rs256-public.pem"

[[keys]]
name = "spa"
secret_env = "T_APP_KEY_SPA"
end_user = "required"
[keys.jwt]
jwks_file = "{FIXTURES}/jwt-jwks.json"
"#
        ),
        extra_env: vec![("T_APP_KEY_SPA".into(), SPA_KEY.into())],
        ..Options::default()
    })
}

const SPA_KEY: &str = "wk-test-spa-0123456789abcdef";

async fn send(w: &Warden, bearer: Option<&str>, token: &str) -> reqwest::Response {
    let mut request = client()
        .post(w.url("/v1/chat/completions"))
        .header("x-warden-user-token", token)
        .json(&chat_body());
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn rs256_pem_and_jwks_tokens_name_the_user() {
    let w = start();

    let private = std::fs::read(format!("{FIXTURES}/jwt-rs256-private.pem")).unwrap();
    // Token alone: the PEM-configured key accepts it.
    let response = send(&w, None, &rs256_token("phone-user", None, &private)).await;
    assert_eq!(response.status(), 200);

    // Bearer key plus a token verified against that key's JWKS by kid.
    let response = send(
        &w,
        Some(SPA_KEY),
        &rs256_token("spa-user", Some("test-key-1"), &private),
    )
    .await;
    assert_eq!(response.status(), 200);
    let unknown_kid = send(
        &w,
        Some(SPA_KEY),
        &rs256_token("spa-user", Some("other"), &private),
    )
    .await;
    assert_eq!(
        expect_error(unknown_kid, 401).await["code"],
        "invalid_user_token"
    );
    // With a Bearer key, the token must be presented for that key's users.
    let missing = client()
        .post(w.url("/v1/chat/completions"))
        .bearer_auth(SPA_KEY)
        .json(&chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(missing, 400).await["code"], "missing_end_user");

    let seen = w.standin.requests();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].body["safety_identifier"],
        seen[1].body["safety_identifier"]
    );
}

#[tokio::test]
async fn an_hs256_token_cannot_pass_as_rs256() {
    let w = start();
    // Algorithm confusion: a token "signed" with the public key as an HMAC secret.
    let public = std::fs::read_to_string(format!("{FIXTURES}/jwt-rs256-public.pem")).unwrap();
    let forged = hs256_token("attacker", "test-app", &public);
    let response = send(&w, None, &forged).await;
    expect_error(response, 401).await;
    assert!(w.standin.requests().is_empty());
}
