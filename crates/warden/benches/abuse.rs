//! Cost of abuse detection: what a request pays on the hot path (building the
//! observation; the geo lookup), and what the background analyzer spends per request
//! (prompt extraction, SimHash, the distillation window of two actors).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use warden::abuse::distillation::{Distillation, Window};
use warden::abuse::observation::{shape, Observation};
use warden::abuse::simhash::simhash;
use warden::config::EndUserPolicy;
use warden::endpoint::Endpoint;
use warden::geo::GeoDb;
use warden::identity::{EndUser, UserSource};
use warden::json_body::JsonBody;
use warden::keys::{KeyOrigin, VirtualKey};
use warden::pipeline::RequestContext;

const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant for an online shop. Answer briefly and politely."},{"role":"user","content":"Where is my order 4411? It was supposed to arrive on Monday and the tracking page has not changed since Friday."}],"response_format":{"type":"json_object"},"n":2}"#;

fn context() -> RequestContext {
    RequestContext {
        request_id: "wrq_bench".into(),
        started: Instant::now(),
        endpoint: Endpoint::ChatCompletions,
        method: http::Method::POST,
        path_and_query: "/v1/chat/completions".into(),
        headers: http::HeaderMap::new(),
        client_ip: IpAddr::V4(Ipv4Addr::new(85, 214, 1, 2)),
        incoming: None,
        raw_body: Bytes::from_static(BODY),
        body: JsonBody::parse(BODY).ok(),
        form: None,
        form_file: None,
        streamed: std::sync::Mutex::new(None),
        texts: warden::openai::extract(
            Endpoint::ChatCompletions,
            &JsonBody::parse(BODY).unwrap(),
            None,
        )
        .unwrap(),
        model: Some("gpt-4o-mini".into()),
        stream: false,
        key: Some(Arc::new(VirtualKey {
            name: "app".into(),
            origin: KeyOrigin::Config,
            end_user: EndUserPolicy::Required,
            trusted_user_field: false,
            jwt: None,
            upstream_key: None,
            openai_project: None,
            scope: None,
            shared_objects: false,
        })),
        user_claims: None,
        end_user: Some(EndUser {
            id: "alice".into(),
            source: UserSource::Header,
        }),
        safety_identifier: None,
        limit_ticket: None,
        trail: Vec::new(),
        findings: Vec::new(),
        country: None,
        tier: None,
        tier_override: None,
        response_headers: Vec::new(),
        audit: Default::default(),
        deferred: None,
    }
}

fn geo() -> GeoDb {
    #[derive(serde::Serialize)]
    struct Country {
        iso_code: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Record {
        country: Country,
    }
    let mut writer = mmdb_writer::Writer::new("Bench-Country");
    // A few thousand networks, like a trimmed country database.
    for a in 1..=200u8 {
        for b in (0..=255u8).step_by(16) {
            let net: ipnet::IpNet = format!("{a}.{b}.0.0/12")
                .parse::<ipnet::IpNet>()
                .unwrap()
                .trunc();
            let code = if a % 7 == 0 { "RU" } else { "DE" };
            let _ = writer.insert(
                net,
                &Record {
                    country: Country { iso_code: code },
                },
            );
        }
    }
    GeoDb::from_bytes(writer.to_bytes().unwrap()).unwrap()
}

fn bench(c: &mut Criterion) {
    let ctx = context();
    c.bench_function("hot path: Observation::of", |b| {
        b.iter(|| black_box(Observation::of(black_box(&ctx), None)))
    });
    let body = ctx.body.as_ref().unwrap();
    c.bench_function("hot path: request shape", |b| {
        b.iter(|| black_box(shape(black_box(body))))
    });
    let db = geo();
    let ip = IpAddr::V4(Ipv4Addr::new(85, 214, 1, 2));
    c.bench_function("hot path: geo lookup", |b| {
        b.iter(|| black_box(db.country(black_box(ip))))
    });

    let window = Window {
        window_ms: 3_600_000,
        min_requests: 20,
        volume: 500,
    };
    let mut key = Distillation::default();
    let mut user = Distillation::default();
    for i in 0..200 {
        let text = format!("Question number {i} about order {}", i * 13);
        key.record(i, simhash(&text), Default::default(), &window);
        user.record(i, simhash(&text), Default::default(), &window);
    }
    let mut at = 200;
    c.bench_function(
        "analyzer: one request (simhash, two actors; the prompt comes with the observation)",
        |b| {
            b.iter(|| {
                at += 1;
                let text = ctx.texts.prompt().unwrap();
                let fingerprint = simhash(&text);
                for d in [&mut key, &mut user] {
                    d.record(at, fingerprint, Default::default(), &window);
                    black_box(d.score(at, &window));
                }
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
