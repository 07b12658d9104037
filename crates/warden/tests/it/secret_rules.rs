//! The shipped secret rules on the formats the major clouds and SaaS use: each leak is
//! redacted down to its secret part, and ordinary code and prose that only name a
//! credential (`password = os.getenv(...)`, "reset your API key") are left alone. The last
//! test sends a labelled AWS secret through the running gateway and reads what upstream saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use serde_json::json;
use warden::safety::filters::{FilterPolicy, Scanner};

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9x8Lk2Pq";

fn scanner() -> Scanner {
    Scanner::new(&FilterPolicy::default()).unwrap()
}

/// The rule ids of the secret findings, and the text as it would go upstream.
fn redact(text: &str) -> (Vec<String>, String) {
    let scan = scanner().scan(text);
    let rules = scan
        .findings
        .iter()
        .filter(|f| &*f.category == "secrets")
        .map(|f| f.rule.to_string())
        .collect();
    let out = scan.redacted(text).unwrap_or_else(|| text.to_owned());
    (rules, out)
}

fn fake(piece: &str, len: usize) -> String {
    piece.repeat(len / piece.len() + 1)[..len].to_owned()
}

#[test]
fn each_credential_format_is_redacted_to_its_secret() {
    let gcp_key_id = fake("3f9a1c0b7e", 40);
    let azure_key = format!(
        "{}==",
        fake("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu", 86)
    );
    let twilio_key = format!("SK{}", fake("0a1b2c3d4e5f6789", 32));
    let jwt_signature = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "aws-secret-access-key",
            format!("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {AWS_SECRET}\n"),
            AWS_SECRET,
        ),
        (
            "aws-secret-access-key",
            format!("export AWS_SECRET_ACCESS_KEY=\"{AWS_SECRET}\""),
            AWS_SECRET,
        ),
        (
            "gcp-service-account-key-id",
            format!("{{\"type\": \"service_account\", \"project_id\": \"shop-prod\", \"private_key_id\": \"{gcp_key_id}\", \"client_email\": \"ci@shop-prod.iam.gserviceaccount.com\"}}"),
            &gcp_key_id,
        ),
        (
            "private-key-block",
            "\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n\"".to_owned(),
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        ),
        (
            "private-key-block",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGXyZ1sBCADQ8r2mN4wq\n-----END PGP PRIVATE KEY BLOCK-----".to_owned(),
            "lQOYBGXyZ1sBCADQ8r2mN4wq",
        ),
        (
            "azure-connection-string-key",
            format!("DefaultEndpointsProtocol=https;AccountName=shopdata;AccountKey={azure_key};EndpointSuffix=core.windows.net"),
            &azure_key,
        ),
        (
            "azure-connection-string-key",
            "Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=q7Xr2mPz9KfL0vN4bT6yW1sH8dJ3cA5eG0uI2oQ+xYk=".to_owned(),
            "q7Xr2mPz9KfL0vN4bT6yW1sH8dJ3cA5eG0uI2oQ+xYk=",
        ),
        (
            "azure-sas-signature",
            "https://shopdata.blob.core.windows.net/x?sv=2022-11-02&ss=b&sig=Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed%2BcBa9Z8y%3D".to_owned(),
            "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0Ed%2BcBa9Z8y%3D",
        ),
        (
            "slack-token",
            format!("SLACK_BOT_TOKEN=xoxb-{}", "2048163529-4120937771-Zx9Yw8Vu7Ts6Rq5Po4Nm"),
            "xoxb-2048163529-4120937771-Zx9Yw8Vu7Ts6Rq5Po4Nm",
        ),
        (
            "slack-webhook",
            "curl -X POST https://hooks.slack.com/services/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 -d '{}'".to_owned(),
            "hooks.slack.com/services/T0AB12CDE",
        ),
        (
            "stripe-secret-key",
            format!("stripe.api_key = \"sk_test_{}\"", "4eC39HqLyjWDarjtT1zdp7dc"),
            "4eC39HqLyjWDarjtT1zdp7dc",
        ),
        (
            "stripe-secret-key",
            format!("endpoint secret whsec_{}", "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1G"),
            "whsec_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1G",
        ),
        ("twilio-api-key", format!("client = Client('{twilio_key}', secret)"), &twilio_key),
        (
            "labelled-secret",
            "TWILIO_AUTH_TOKEN=9f8e7d6c5b4a39281706f5e4d3c2b1a0".to_owned(),
            "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        ),
        (
            "labelled-secret",
            "{\"client_id\": \"shop-web\", \"client_secret\": \"Qm9vS2hlbGZfMjAyNl9wcm9k\"}".to_owned(),
            "Qm9vS2hlbGZfMjAyNl9wcm9k",
        ),
        (
            "labelled-secret",
            "db:\n  user: app\n  password: Tr0ub4dor&3horse\n".to_owned(),
            "Tr0ub4dor&3horse",
        ),
        (
            "jwt",
            format!("Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{jwt_signature}"),
            jwt_signature,
        ),
        (
            "database-url-password",
            "DATABASE_URL=postgres://shop:p4ssW0rd-2026@db.internal:5432/shop".to_owned(),
            "p4ssW0rd-2026",
        ),
        (
            "database-url-password",
            "mongodb+srv://reporting:Zk29xLqP7@cluster0.mongodb.net/sales".to_owned(),
            "Zk29xLqP7",
        ),
        (
            "google-oauth-client-secret",
            format!("GOOGLE_CLIENT_SECRET={}", "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"),
            "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",
        ),
    ];
    for (rule, text, secret) in &cases {
        let (rules, out) = redact(text);
        assert!(
            rules.iter().any(|r| r == rule),
            "{rule} missed in {text:?}: {rules:?}"
        );
        assert!(!out.contains(secret), "{secret} survived: {out}");
        assert!(out.contains(&format!("[REDACTED:{rule}]")), "{out}");
    }
}

#[test]
fn labels_keep_their_name_and_only_the_value_goes() {
    let (_, out) = redact(&format!(
        "aws_secret_access_key = {AWS_SECRET}\nregion = eu-west-1"
    ));
    assert_eq!(
        out,
        "aws_secret_access_key = [REDACTED:aws-secret-access-key]\nregion = eu-west-1"
    );
    let (_, out) = redact("postgres://shop:p4ssW0rd-2026@db.internal:5432/shop");
    assert_eq!(
        out,
        "postgres://shop:[REDACTED:database-url-password]@db.internal:5432/shop"
    );
    let (_, out) =
        redact("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl ok");
    assert_eq!(
        out, "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.[REDACTED:jwt] ok",
        "the claims stay readable for a debugging question"
    );
}

/// Code and prose that name credentials without holding one: nothing is redacted.
#[test]
fn ordinary_code_and_prose_are_not_redacted() {
    let texts = [
        "password = os.getenv(\"DB_PASSWORD\")",
        "api_key = get_api_key_from_config()",
        "const apiKey = process.env.OPENAI_API_KEY;",
        "client_secret: ${GOOGLE_CLIENT_SECRET}",
        "password: {{ vault_db_password }}",
        "secret_key = settings.SECRET_KEY",
        "export AWS_SECRET_ACCESS_KEY=<your secret access key>",
        "aws_secret_access_key = YOUR_SECRET_ACCESS_KEY",
        "DATABASE_URL=postgres://user:password@localhost:5432/app",
        "redis://default:changeme@cache:6379/0",
        "postgresql://postgres:postgres@127.0.0.1/test",
        "Set the access_token: see the docs for how to rotate it.",
        "If you forgot your password: click 'Reset password' on the sign-in page.",
        "The password must be at least 12 characters and include a digit.",
        "def check(password: str) -> bool:\n    return len(password) >= 12",
        "auth_token = request.headers.get('Authorization')",
        "How do I rotate an AWS secret access key without downtime?",
        "Our Slack workspace uses the #incidents channel; Stripe sends webhooks to /hooks/stripe.",
        "Azure connection strings look like DefaultEndpointsProtocol=https;AccountName=<name>;AccountKey=<key>",
        "A JWT has three parts: header.payload.signature, each base64url encoded.",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        "The SKU is SK-2231 and the order id is 7f3a9c.",
        "let pwd = std::env::current_dir()?;",
        "git commit -m 'update password_reset flow'",
        "Mix 200 g flour, 2 eggs and a pinch of salt; bake at 180 °C for 25 minutes.",
        "sig=abc is a query parameter in the example URL; the real one is longer.",
    ];
    for text in texts {
        let (rules, out) = redact(text);
        assert!(rules.is_empty(), "{rules:?} on {text:?} -> {out}");
    }
}

#[tokio::test]
async fn a_labelled_aws_secret_never_reaches_upstream() {
    let w = Warden::start();
    let text = format!(
        "My boto3 call fails. ~/.aws/credentials:\n[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {AWS_SECRET}\nWhy?"
    );
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}]
    });
    let response = post(&w, "/v1/chat/completions", Some("alice"), &body).await;
    assert_eq!(response.status(), 200);
    let calls: Vec<_> = w
        .standin
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(calls.len(), 1);
    assert!(
        !calls[0].body_text.contains(AWS_SECRET),
        "the secret reached upstream"
    );
    let sent = calls[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(
        sent.contains("aws_secret_access_key = [REDACTED:aws-secret-access-key]\nWhy?"),
        "{sent}"
    );
}
