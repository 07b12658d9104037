//! What the benchmark sends: a typical ~2 KB chat completion and the headers each target needs.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use serde_json::json;
use std::net::SocketAddr;

/// The one endpoint exercised.
pub const PATH: &str = "/v1/chat/completions";
/// The stand-in's upstream key (the direct target sends it; Warden holds it).
pub const UPSTREAM_KEY: &str = "sk-bench-upstream";
/// The virtual key Warden hands the benchmark.
pub const VIRTUAL_KEY: &str = "wk-bench-0123456789abcdef";
/// How many distinct end users the Warden target rotates over.
pub const USERS: usize = 1000;

const USER_HEADER: HeaderName = HeaderName::from_static("x-warden-user");

/// A chat completion body shaped like real traffic: a system prompt and a few turns.
pub fn chat_body(stream: bool) -> Bytes {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are the support assistant of Northwind Outfitters, an online shop for hiking and camping gear. Answer in a friendly, concise tone. Only discuss orders, shipping, returns, sizing and product care. Never reveal internal notes, discount codes or other customers' data. If you are unsure, say so and offer to hand the conversation to a human agent. Prices are in euros and include VAT."},
            {"role": "user", "content": "Hi! I ordered the Alpine Trek 45 backpack last Tuesday (order NW-20931) and the tracking page still says 'label created'. Is something wrong? I need it before a trip on the 14th."},
            {"role": "assistant", "content": "Thanks for reaching out! I checked order NW-20931: it left our warehouse yesterday evening, and the carrier usually scans parcels at the first hub within 24 hours, which is why the page still shows 'label created'. Standard delivery takes 2 to 4 working days, so it should arrive well before the 14th. I will keep an eye on it."},
            {"role": "user", "content": "Great, thanks. Another question: the hip belt on my old pack always slipped down. Does the Alpine Trek have an adjustable hip belt, and what torso length is it made for? I am 1.82 m tall."},
            {"role": "assistant", "content": "Yes, the Alpine Trek 45 has a padded hip belt with dual pull-forward adjustment and a silicone grip layer that keeps it from sliding. The back system adjusts for torso lengths from 43 to 53 cm; at 1.82 m most people fall around 48 to 50 cm, right in the middle of that range. There is a short fitting guide in the lid pocket."},
            {"role": "user", "content": "Perfect. Last thing: if it doesn't fit, can I return it after trying it on at home, and who pays for the return shipping? Also, can I exchange it for the 55 litre version instead?"}
        ]
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

/// Which side of the comparison a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Straight to the stand-in upstream.
    Direct,
    /// Through Warden, which forwards to the same stand-in.
    Warden,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Warden => "warden",
        }
    }
}

/// Where requests go and the headers that make them valid there.
#[derive(Debug)]
pub struct Target {
    pub side: Side,
    host: HeaderValue,
    authorization: HeaderValue,
    /// `X-Warden-User` values to rotate over; empty for the direct target.
    users: Vec<HeaderValue>,
}

impl Target {
    pub fn new(side: Side, addr: SocketAddr) -> anyhow::Result<Target> {
        let key = match side {
            Side::Direct => UPSTREAM_KEY,
            Side::Warden => VIRTUAL_KEY,
        };
        let users = match side {
            Side::Direct => Vec::new(),
            Side::Warden => (0..USERS)
                .map(|n| HeaderValue::from_str(&format!("user-{n}")))
                .collect::<Result<_, _>>()?,
        };
        Ok(Target {
            side,
            host: HeaderValue::from_str(&addr.to_string())?,
            authorization: HeaderValue::from_str(&format!("Bearer {key}"))?,
            users,
        })
    }

    /// Request number `n` of a run (the end user rotates with `n`).
    pub fn request(&self, n: u64, body: &Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_static(PATH);
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, self.authorization.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !self.users.is_empty() {
            let index = usize::try_from(n).unwrap_or(0) % self.users.len();
            if let Some(user) = self.users.get(index) {
                headers.insert(USER_HEADER, user.clone());
            }
        }
        request
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_body_is_about_two_kilobytes_of_valid_chat_json() {
        for stream in [false, true] {
            let body = chat_body(stream);
            assert!((1800..2600).contains(&body.len()), "{} bytes", body.len());
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["model"], "gpt-4o-mini");
            assert_eq!(value["stream"].as_bool().unwrap_or(false), stream);
        }
    }

    #[test]
    fn only_the_warden_target_names_an_end_user_and_it_rotates() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let body = chat_body(false);
        let direct = Target::new(Side::Direct, addr).unwrap();
        let request = direct.request(7, &body);
        assert!(request.headers().get("x-warden-user").is_none());
        assert_eq!(
            request.headers()["authorization"],
            "Bearer sk-bench-upstream"
        );

        let warden = Target::new(Side::Warden, addr).unwrap();
        let first = warden.request(7, &body);
        assert_eq!(first.headers()["x-warden-user"], "user-7");
        let wrapped = warden.request(7 + USERS as u64, &body);
        assert_eq!(wrapped.headers()["x-warden-user"], "user-7");
        assert_eq!(first.headers()["host"], "127.0.0.1:9");
    }
}
