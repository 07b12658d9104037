//! Issue 12's rule, against the real binary: every text upstream would read was seen by
//! the checks, or the request was refused. A block rule for a canary word stands in for
//! "the checks"; the checked-in corpus (`tests/corpus/requests.jsonl`) hides the canary in
//! every text-bearing place and shape we know of, and carries bodies that must be refused
//! as unreadable and ordinary ones that must pass. Whatever the case, the stand-in must
//! never receive the canary, and Warden must never answer 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use warden::limits::tokens::Encoding;

const CANARY: &str = "wardencanary";

struct Case {
    name: String,
    path: String,
    body: String,
    expect: u16,
}

fn corpus() -> Vec<Case> {
    let text = include_str!("../corpus/requests.jsonl");
    let mut cases: Vec<Case> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Case {
                name: v["name"].as_str().unwrap().to_owned(),
                path: v["path"].as_str().unwrap().to_owned(),
                body: v["body"].as_str().unwrap().to_owned(),
                expect: v["expect"].as_u64().unwrap() as u16,
            }
        })
        .collect();
    // Token ids are only known with the tokenizer: the canary as tokens of each table.
    let tokens = |model: &str| {
        serde_json::to_string(&Encoding::for_model(model).encode(&format!("say {CANARY} now")))
            .unwrap()
    };
    cases.push(Case {
        name: "canary as completions token ids".into(),
        path: "/v1/completions".into(),
        body: format!(
            r#"{{"model":"gpt-3.5-turbo-instruct","prompt":{}}}"#,
            tokens("gpt-3.5-turbo-instruct")
        ),
        expect: 400,
    });
    cases.push(Case {
        name: "canary as embeddings token arrays".into(),
        path: "/v1/embeddings".into(),
        body: format!(
            r#"{{"model":"text-embedding-3-small","input":[[15339],{}]}}"#,
            tokens("text-embedding-3-small")
        ),
        expect: 400,
    });
    cases
}

fn gateway() -> (Warden, tempfile::TempDir) {
    let rules = tempfile::tempdir().unwrap();
    let path = rules.path().join("canary.toml");
    std::fs::write(
        &path,
        format!("[[rule]]\nid = \"canary\"\ncategory = \"canary\"\nkeywords = [\"{CANARY}\"]\naction = \"block\"\n"),
    )
    .unwrap();
    let w = Warden::start_with(Options {
        extra_toml: format!("[safety.filters]\nrules_files = [\"{}\"]\n", path.display()),
        ..Default::default()
    });
    (w, rules)
}

/// Every string of a JSON value, for the decoded view of what upstream received.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.to_lowercase()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.to_lowercase());
            strings(v, out)
        }),
        _ => {}
    }
}

#[tokio::test]
async fn no_text_reaches_upstream_unchecked() {
    let (w, _rules) = gateway();
    let cases = corpus();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        // One end user per case: blocked cases earn strikes, and a suspension would
        // answer 403 before the body is read.
        let response = client()
            .post(w.url(&case.path))
            .bearer_auth(APP_KEY)
            .header("x-warden-user", format!("corpus-{i}"))
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status != case.expect {
            failures.push(format!(
                "{}: {status} (wanted {}) {body}",
                case.name, case.expect
            ));
        } else if status >= 400 {
            let error = &body["error"];
            for key in ["message", "type", "param", "code"] {
                if error.get(key).is_none() {
                    failures.push(format!("{}: no '{key}' in {body}", case.name));
                }
            }
        }
    }
    let received = w.standin.requests();
    // Checking text is the Moderation endpoint's job: its input passes as sent.
    for request in received
        .iter()
        .filter(|r| !r.path.ends_with("/moderations"))
    {
        let mut seen = Vec::new();
        strings(&request.body, &mut seen);
        if request.body_text.to_lowercase().contains(CANARY)
            || seen.iter().any(|s| s.contains(CANARY))
        {
            failures.push(format!(
                "the canary reached upstream: {} {}",
                request.path, request.body_text
            ));
        }
    }
    let forwarded = cases.iter().filter(|c| c.expect == 200).count();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        received.len(),
        forwarded,
        "only the passing cases reach upstream"
    );
    eprintln!(
        "request corpus: {} cases, {} forwarded, {} refused, 0 unchecked forwards",
        cases.len(),
        forwarded,
        cases.len() - forwarded
    );
}

#[tokio::test]
async fn a_client_safety_identifier_never_reaches_upstream() {
    let w = Warden::start();
    let bodies = [
        (
            "/v1/chat/completions",
            serde_json::json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"safety_identifier":"victim"}),
        ),
        (
            "/v1/responses",
            serde_json::json!({"model":"gpt-4o-mini","input":"hi","safety_identifier":"victim"}),
        ),
        (
            "/v1/embeddings",
            serde_json::json!({"model":"text-embedding-3-small","input":"hi","safety_identifier":"victim"}),
        ),
        (
            "/v1/completions",
            serde_json::json!({"model":"gpt-3.5-turbo-instruct","prompt":"hi","safety_identifier":"victim"}),
        ),
        (
            "/v1/images/generations",
            serde_json::json!({"model":"gpt-image-1","prompt":"a cat","safety_identifier":"victim"}),
        ),
        (
            "/v1/moderations",
            serde_json::json!({"input":"hi","safety_identifier":"victim"}),
        ),
    ];
    for (path, body) in &bodies {
        let response = post(&w, path, Some("alice"), body).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let received = w.standin.requests();
    assert_eq!(received.len(), bodies.len());
    for request in received {
        assert!(
            !request.body_text.contains("victim"),
            "{}: {}",
            request.path,
            request.body_text
        );
    }
}

#[tokio::test]
async fn a_model_scoped_key_must_name_its_model() {
    let w = narrow_key("allowed_models = [\"gpt-4o-mini\"]\n");
    let send = |body: serde_json::Value| {
        client()
            .post(w.url("/v1/responses"))
            .bearer_auth(NARROW_KEY)
            .json(&body)
            .send()
    };
    let continued = send(serde_json::json!({"previous_response_id":"resp_1","input":"go on"}))
        .await
        .unwrap();
    let error = expect_error(continued, 400).await;
    assert_eq!(error["code"], "model_required");
    assert_eq!(error["param"], "model");
    let named = send(serde_json::json!({"model":"gpt-4o-mini","input":"hi"}))
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    let other = send(serde_json::json!({"model":"gpt-4o","input":"hi"}))
        .await
        .unwrap();
    assert_eq!(expect_error(other, 403).await["code"], "model_not_allowed");
    assert_eq!(w.standin.requests().len(), 1);
}

/// Regression: a config key's allow-lists were checked inside the limits stage, so
/// `[limits] enabled = false` let every model and endpoint through.
#[tokio::test]
async fn a_config_keys_allow_lists_hold_with_limits_off() {
    let w = narrow_key(
        "allowed_models = [\"gpt-4o-mini\"]\nallowed_endpoints = [\"chat.completions\"]\n[limits]\nenabled = false\n",
    );
    let send = |path: &'static str, body: serde_json::Value| {
        client()
            .post(w.url(path))
            .bearer_auth(NARROW_KEY)
            .json(&body)
            .send()
    };
    let other_model = send(
        "/v1/chat/completions",
        serde_json::json!({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        expect_error(other_model, 403).await["code"],
        "model_not_allowed"
    );
    let other_endpoint = send(
        "/v1/embeddings",
        serde_json::json!({"model":"gpt-4o-mini","input":"hi"}),
    )
    .await
    .unwrap();
    assert_eq!(
        expect_error(other_endpoint, 403).await["code"],
        "endpoint_not_allowed"
    );
    assert!(w.standin.requests().is_empty());
}

const NARROW_KEY: &str = "wk-test-narrow-0123456789abcdef";

/// A gateway with a config key `narrow` whose `[keys.limits]` are `limits` (which may go
/// on with more sections).
fn narrow_key(limits: &str) -> Warden {
    Warden::start_with(Options {
        extra_toml: format!(
            "[[keys]]\nname = \"narrow\"\nsecret_env = \"T_NARROW_KEY\"\nend_user = \"optional\"\n[keys.limits]\n{limits}"
        ),
        extra_env: vec![("T_NARROW_KEY".into(), NARROW_KEY.into())],
        ..Default::default()
    })
}
