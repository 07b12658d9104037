//! The stand-in's Admin, Usage and Costs APIs over real HTTP: OpenAI's shapes, usage that
//! is what the stand-in served per key, outside traffic on cue, pagination, auth.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::net::TcpStream;

const KEY: &str = "sk-standin-org-test-0123456789";
const ADMIN: &str = "sk-admin-standin-test-0123456789";

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    auth: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn spawn() -> standin::Handle {
    standin::spawn(standin::Options {
        api_key: Some(KEY.into()),
        admin_key: Some(ADMIN.into()),
        ..Default::default()
    })
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn usage_reports_what_was_served_per_key_plus_outside_traffic() {
    let s = spawn();
    let chat =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]});
    let mut tokens = 0;
    for _ in 0..3 {
        let (status, answer) = call(
            s.addr(),
            Method::POST,
            "/v1/chat/completions",
            KEY,
            Some(chat.clone()),
        )
        .await;
        assert_eq!(status, 200);
        tokens += answer["usage"]["total_tokens"].as_u64().unwrap();
    }
    let start = now() - 120;
    let path = format!("/v1/organization/usage/completions?start_time={start}&bucket_width=1m&group_by=api_key_id,project_id&limit=5");
    let (status, page) = call(s.addr(), Method::GET, &path, ADMIN, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["object"], "page");
    let results: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|b| assert_eq!(b["object"], "bucket"))
        .flat_map(|b| b["results"].as_array().unwrap())
        .collect();
    let requests: u64 = results
        .iter()
        .map(|r| r["num_model_requests"].as_u64().unwrap())
        .sum();
    let total: u64 = results
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!((requests, total), (3, tokens));
    assert!(results
        .iter()
        .all(|r| r["api_key_id"] == standin::DEFAULT_KEY_ID
            && r["project_id"] == standin::DEFAULT_PROJECT));
    assert_eq!(
        results[0]["object"],
        "organization.usage.completions.result"
    );

    let (status, _) = call(
        s.addr(),
        Method::POST,
        "/v1/images/generations",
        KEY,
        Some(json!({"prompt": "a cat", "n": 3})),
    )
    .await;
    assert_eq!(status, 200);
    let images_path = format!("/v1/organization/usage/images?start_time={start}&bucket_width=1m&group_by=api_key_id&limit=5");
    let (status, page) = call(s.addr(), Method::GET, &images_path, ADMIN, None).await;
    assert_eq!(status, 200, "{page}");
    let results: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .collect();
    assert_eq!(results.len(), 1, "{page}");
    assert_eq!(results[0]["object"], "organization.usage.images.result");
    assert_eq!(
        (
            results[0]["num_model_requests"].as_u64(),
            results[0]["images"].as_u64()
        ),
        (Some(1), Some(3))
    );

    s.add_outside_usage(KEY, 40, 1000, 500).unwrap();
    let (_, page) = call(s.addr(), Method::GET, &path, ADMIN, None).await;
    let requests: u64 = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .map(|r| r["num_model_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 43);

    let (status, costs) = call(
        s.addr(),
        Method::GET,
        &format!(
            "/v1/organization/costs?start_time={}&group_by=project_id",
            now() - 86_400
        ),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{costs}");
    let usd: f64 = costs["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["results"].as_array().unwrap())
        .map(|r| {
            assert_eq!(r["amount"]["currency"], "usd");
            r["amount"]["value"].as_f64().unwrap()
        })
        .sum();
    assert!(usd > 0.0);
}

#[tokio::test]
async fn usage_pages_follow_next_page_until_the_end() {
    let s = spawn();
    let start = now() - 600;
    let mut path = format!(
        "/v1/organization/usage/completions?start_time={start}&end_time={}&bucket_width=1m&limit=4",
        start - start % 60 + 600
    );
    let mut buckets = 0;
    let mut pages = 0;
    loop {
        let (status, page) = call(s.addr(), Method::GET, &path, ADMIN, None).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        buckets += page["data"].as_array().unwrap().len();
        if page["has_more"] != true {
            assert!(page["next_page"].is_null());
            break;
        }
        let next = page["next_page"].as_str().unwrap().replace('=', "%3D");
        path = format!("/v1/organization/usage/completions?start_time={start}&end_time={}&bucket_width=1m&limit=4&page={next}", start - start % 60 + 600);
    }
    assert_eq!((pages, buckets), (3, 10));
}

#[tokio::test]
async fn admin_api_creates_lists_and_deletes_keys_and_refuses_bad_input() {
    let s = spawn();
    let base = format!("/v1/organization/projects/{}", standin::DEFAULT_PROJECT);
    // Inference keys do not open the Admin API, and the Admin key does not serve inference.
    let (status, error) = call(
        s.addr(),
        Method::GET,
        "/v1/organization/projects",
        KEY,
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, _) = call(s.addr(), Method::GET, "/v1/models", ADMIN, None).await;
    assert_eq!(status, 401);

    let (status, created) = call(
        s.addr(),
        Method::POST,
        &format!("{base}/service_accounts"),
        ADMIN,
        Some(json!({"name": "warden"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["object"], "organization.project.service_account");
    let new_key = created["api_key"]["value"].as_str().unwrap().to_owned();
    let new_id = created["api_key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(s.addr(), Method::GET, "/v1/models", &new_key, None)
            .await
            .0,
        200,
        "a created key serves at once"
    );

    let (_, user) = (0, s.add_user_key(standin::DEFAULT_PROJECT, "laptop"));
    let (status, listed) = call(
        s.addr(),
        Method::GET,
        &format!("{base}/api_keys?limit=2"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["has_more"], true);
    let after = listed["last_id"].as_str().unwrap();
    let (_, rest) = call(
        s.addr(),
        Method::GET,
        &format!("{base}/api_keys?limit=2&after={after}"),
        ADMIN,
        None,
    )
    .await;
    let all: Vec<Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .cloned()
        .collect();
    assert_eq!(all.len(), 3);
    let laptop = all.iter().find(|k| k["id"] == user.0).unwrap();
    assert_eq!(laptop["owner"]["type"], "user");
    let redacted = laptop["redacted_value"].as_str().unwrap();
    let (head, tail) = redacted.split_once("...").unwrap();
    assert!(
        user.1.starts_with(head) && user.1.ends_with(tail),
        "{redacted}"
    );

    let (status, deleted) = call(
        s.addr(),
        Method::DELETE,
        &format!("{base}/api_keys/{new_id}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!((status, deleted["deleted"].as_bool()), (200, Some(true)));
    assert_eq!(
        call(s.addr(), Method::GET, "/v1/models", &new_key, None)
            .await
            .0,
        401,
        "a deleted key stops working"
    );
    let (status, error) = call(
        s.addr(),
        Method::DELETE,
        &format!("{base}/api_keys/{new_id}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("api_key_not_found"))
    );

    for (path, param) in [
        (
            "/v1/organization/usage/completions?bucket_width=1m".to_owned(),
            "start_time",
        ),
        (
            "/v1/organization/usage/completions?start_time=1&bucket_width=2m".to_owned(),
            "bucket_width",
        ),
        (
            "/v1/organization/usage/completions?start_time=1&bucket_width=1m&limit=5000".to_owned(),
            "limit",
        ),
        (
            "/v1/organization/usage/completions?start_time=1&page=nonsense".to_owned(),
            "page",
        ),
        (
            "/v1/organization/costs?start_time=1&bucket_width=1h".to_owned(),
            "bucket_width",
        ),
    ] {
        let (status, error) = call(s.addr(), Method::GET, &path, ADMIN, None).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(error["error"]["param"], param, "{path}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let (status, _) = call(
        s.addr(),
        Method::GET,
        "/v1/organization/projects/proj_nope/api_keys",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 404);
}
