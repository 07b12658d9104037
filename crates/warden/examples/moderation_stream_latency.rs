//! Measures what streaming output moderation adds: time to first token and to last token
//! of a streamed chat through Warden with output moderation on vs off, against the
//! in-process stand-in (`chunk_delay_ms` paces its words). Short run; not a timed test.
//! `cargo run --release -p warden --example moderation_stream_latency`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use warden::config::{Config, MapEnv};

const RUNS: usize = 20;

async fn gateway(standin: &standin::Handle, output: bool) -> warden::server::Running {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
base_url = "{}"
api_key_env = "K"
[storage]
url = "sqlite::memory:"
[identity]
safety_identifier_secret_env = "S"
[[keys]]
name = "bench"
secret_env = "B"
end_user = "optional"
[safety.moderation.output]
enabled = {output}
"#,
        standin.base_url()
    );
    let config = Config::from_toml(&toml).expect("valid config");
    let env = MapEnv::default()
        .with("K", "sk-bench")
        .with("S", "bench-safety-secret-0123456789")
        .with("B", "wk-bench-0123456789abcdef");
    warden::server::start(&config, &env).await.expect("starts")
}

/// (time to first content token, time to last byte) for one streamed chat.
async fn one(client: &reqwest::Client, base: &str, n: usize) -> (Duration, Duration) {
    use futures_util::StreamExt;
    let body = serde_json::json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": format!("unique prompt {n} with some more words")}]});
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("wk-bench-0123456789abcdef")
        .header("x-standin-fault", "chunk_delay_ms=5")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut first = None;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if first.is_none()
            && chunk.windows(9).any(|w| w == b"\"content\"")
            && !chunk.windows(12).any(|w| w == b"\"content\":\"\"")
        {
            first = Some(started.elapsed());
        }
    }
    (first.unwrap_or_default(), started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let standin = standin::spawn(standin::Options {
        api_key: Some("sk-bench".into()),
        ..Default::default()
    })
    .unwrap();
    let client = reqwest::Client::new();
    for output in [false, true] {
        let running = gateway(&standin, output).await;
        let base = format!("http://{}", running.public_addr);
        let mut ttft = Vec::new();
        let mut ttlt = Vec::new();
        for n in 0..RUNS {
            let (f, l) = one(&client, &base, n + if output { 1000 } else { 0 }).await;
            ttft.push(f);
            ttlt.push(l);
        }
        println!(
            "output moderation {}: median TTFT {:?}, median TTLT {:?} ({RUNS} streams, 5 ms between words)",
            if output { "on " } else { "off" },
            median(ttft),
            median(ttlt)
        );
    }
}
