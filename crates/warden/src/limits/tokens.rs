//! Prompt tokens before forwarding. Most requests need only an estimate: token limits
//! reserve it and settle with the `usage` OpenAI reports. The exact count (the model's
//! real tokenizer and OpenAI's message overheads) runs only when a cheap upper bound says
//! the prompt might be over `max_prompt_tokens`, so the cap still bites before OpenAI
//! does and the BPE tables (tens of MB) are built only by a process that needs them.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::endpoint::Endpoint;
use crate::json_body::JsonBody;
use crate::openai::request_text::RequestTexts;

/// The BPE a model uses. Each table is built on first use, once per process
/// (tiktoken-rs singletons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// gpt-4o, 4.1, 4.5, 5 and the o-series use o200k_base; gpt-4, gpt-3.5 and the
    /// text-embedding models use cl100k_base. Unknown (newer) models get o200k_base.
    pub fn for_model(model: &str) -> Encoding {
        let m = model.strip_prefix("ft:").unwrap_or(model);
        let cl100k = ["gpt-4-", "gpt-3.5", "text-embedding-", "gpt-35"];
        if m == "gpt-4" || cl100k.iter().any(|p| m.starts_with(p)) {
            Encoding::Cl100kBase
        } else {
            Encoding::O200kBase
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// The text a token array stands for, as the model will read it; `None` when an id is
    /// not in the table or the tokens do not make whole UTF-8 characters.
    pub fn decode(self, tokens: Vec<u32>) -> Option<String> {
        self.bpe().decode(tokens).ok()
    }

    pub fn encode(self, text: &str) -> Vec<u32> {
        self.bpe().encode_ordinary(text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        self.bpe().encode_ordinary(text).len() as u64
    }
}

/// A prompt's size without the tokenizer: what the limits need of most requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptSize {
    /// Never below the exact count: a BPE token is at least one byte of its text, and
    /// every overhead the exact count adds is paid for by JSON syntax around it, except
    /// images (each mention of an image part adds its largest unknown size). Doubled
    /// for the fields the exact count re-serialises (numbers may print longer).
    pub upper_bound: u64,
    /// About four bytes per token for ASCII, two for other text (CJK runs near one
    /// token per three-byte character; Cyrillic and Greek near one per two bytes).
    pub estimate: u64,
}

impl PromptSize {
    pub fn of(endpoint: Endpoint, texts: &RequestTexts, body: &JsonBody) -> PromptSize {
        let mut raw_bytes = 0;
        let mut image_parts = 0;
        for raw in prompt_fields(endpoint)
            .iter()
            .filter_map(|name| body.raw(name))
        {
            let raw = raw.get().as_bytes();
            raw_bytes += raw.len() as u64;
            image_parts += IMAGE_PART
                .iter()
                .map(|finder| finder.find_iter(raw).count() as u64)
                .sum::<u64>();
        }
        let images = texts.images.len() as u64 * IMAGE_UNKNOWN_HIGH;
        let mut estimate = REPLY_PRIMING + images;
        for text in texts
            .texts
            .iter()
            .filter(|t| !STRUCTURED.contains(&t.field))
        {
            estimate += PER_MESSAGE + text_estimate(&text.text);
        }
        for name in STRUCTURED {
            if let Some(raw) = body.raw(name) {
                estimate += text_estimate(raw.get());
            }
        }
        PromptSize {
            upper_bound: REPLY_PRIMING + image_parts * IMAGE_UNKNOWN_HIGH + 2 * raw_bytes,
            estimate,
        }
    }
}

/// Part types the exact count prices as images (`image_url`, `input_image`).
static IMAGE_PART: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
    std::sync::LazyLock::new(|| {
        [
            memchr::memmem::Finder::new("\"image_url\""),
            memchr::memmem::Finder::new("\"input_image\""),
        ]
    });

/// Fields the exact count reads by their JSON text rather than their strings.
const STRUCTURED: [&str; 3] = ["tools", "functions", "response_format"];

/// The fields `prompt_tokens` reads for an endpoint.
fn prompt_fields(endpoint: Endpoint) -> &'static [&'static str] {
    match endpoint {
        Endpoint::ChatCompletions => &["messages", "tools", "functions", "response_format"],
        Endpoint::Responses => &["instructions", "input", "tools"],
        Endpoint::Completions | Endpoint::ImagesGenerations => &["prompt"],
        Endpoint::Embeddings | Endpoint::Moderations => &["input"],
        Endpoint::Models
        | Endpoint::Model
        | Endpoint::Forward
        | Endpoint::Realtime
        | Endpoint::RealtimeClientSecrets => &[],
        Endpoint::Rest(id) => match id.route().checks {
            crate::routes::Checks::Text(fields) => fields,
            _ => &[],
        },
    }
}

fn text_estimate(text: &str) -> u64 {
    let other = text.bytes().filter(|b| !b.is_ascii()).count() as u64;
    let ascii = text.len() as u64 - other;
    ascii.div_ceil(4) + other.div_ceil(2)
}

/// OpenAI's chat accounting: every message costs 3 tokens plus its fields, a `name`
/// one more, and every reply is primed with 3.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// Image inputs by OpenAI's tile rule: 85 base, 170 per 512 px tile after scaling.
const IMAGE_BASE: u64 = 85;
const IMAGE_TILE: u64 = 170;
/// Dimensions are unknown without fetching the image: count a 1024×1024 image at high
/// detail (4 tiles, 765 tokens), the documented worked example.
const IMAGE_UNKNOWN_HIGH: u64 = IMAGE_BASE + 4 * IMAGE_TILE;

/// Tokens for an image of known size at `detail`.
pub fn image_tokens(detail: Option<&str>, size: Option<(u32, u32)>) -> u64 {
    if detail == Some("low") {
        return IMAGE_BASE;
    }
    let Some((w, h)) = size else {
        return IMAGE_UNKNOWN_HIGH;
    };
    let (mut w, mut h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let fit = (2048.0 / w.max(h)).min(1.0);
    w *= fit;
    h *= fit;
    let short = (768.0 / w.min(h)).min(1.0);
    w *= short;
    h *= short;
    let tiles = (w / 512.0).ceil() * (h / 512.0).ceil();
    IMAGE_BASE + IMAGE_TILE * tiles as u64
}

/// The prompt tokens of a request body, as OpenAI will count them (close to exact for
/// text; images by the rule above; tool definitions by their JSON text).
pub fn prompt_tokens(endpoint: Endpoint, model: &str, body: &JsonBody) -> u64 {
    let enc = Encoding::for_model(model);
    let field = |name: &str| -> Option<Value> {
        body.raw(name)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    };
    let mut total = 0;
    match endpoint {
        Endpoint::ChatCompletions => {
            if let Some(Value::Array(messages)) = field("messages") {
                total += chat_messages(enc, &messages);
            }
            for extra in ["tools", "functions", "response_format"] {
                if let Some(raw) = body.raw(extra) {
                    total += enc.count(raw.get());
                }
            }
        }
        Endpoint::Responses => {
            if let Some(v) = field("instructions") {
                total += content_tokens(enc, &v);
            }
            match field("input") {
                Some(Value::Array(items)) => {
                    for item in &items {
                        total += PER_MESSAGE + item_tokens(enc, item);
                    }
                    total += REPLY_PRIMING;
                }
                Some(other) => total += content_tokens(enc, &other) + REPLY_PRIMING,
                None => {}
            }
            if let Some(raw) = body.raw("tools") {
                total += enc.count(raw.get());
            }
        }
        Endpoint::Completions => total += field("prompt").map_or(0, |v| text_or_ids(enc, &v)),
        Endpoint::Embeddings | Endpoint::Moderations => {
            total += field("input").map_or(0, |v| text_or_ids(enc, &v));
        }
        Endpoint::ImagesGenerations => total += field("prompt").map_or(0, |v| text_or_ids(enc, &v)),
        // A Realtime session's tokens come from its `response.done` usage, not estimated.
        Endpoint::Models
        | Endpoint::Model
        | Endpoint::Forward
        | Endpoint::Realtime
        | Endpoint::RealtimeClientSecrets => {}
        // The text fields a REST route's checks read (speech input, edit prompts).
        Endpoint::Rest(id) => {
            if let crate::routes::Checks::Text(fields) = id.route().checks {
                for name in fields {
                    total += field(name).map_or(0, |v| text_or_ids(enc, &v));
                }
            }
        }
    }
    total
}

fn chat_messages(enc: Encoding, messages: &[Value]) -> u64 {
    let mut total = REPLY_PRIMING;
    for message in messages {
        total += PER_MESSAGE;
        let Value::Object(fields) = message else {
            continue;
        };
        for (key, value) in fields {
            total += match key.as_str() {
                "name" => PER_NAME + content_tokens(enc, value),
                "content" | "role" | "refusal" => content_tokens(enc, value),
                // tool_calls, function_call, audio...: their JSON text.
                _ => enc.count(&value.to_string()),
            };
        }
    }
    total
}

/// A responses `input` item: a message (`role` + `content`) or another item type.
fn item_tokens(enc: Encoding, item: &Value) -> u64 {
    match item {
        Value::Object(fields) if fields.contains_key("role") => fields
            .iter()
            .map(|(k, v)| match k.as_str() {
                "role" | "content" => content_tokens(enc, v),
                _ => 0,
            })
            .sum(),
        other => content_tokens(enc, other),
    }
}

/// Text, an array of content parts (text and images), or anything else by its JSON text.
fn content_tokens(enc: Encoding, value: &Value) -> u64 {
    match value {
        Value::String(text) => enc.count(text),
        Value::Null => 0,
        Value::Array(parts) => parts.iter().map(|p| part_tokens(enc, p)).sum(),
        other => enc.count(&other.to_string()),
    }
}

fn part_tokens(enc: Encoding, part: &Value) -> u64 {
    let Value::Object(fields) = part else {
        return content_tokens(enc, part);
    };
    match fields.get("type").and_then(Value::as_str) {
        Some("text" | "input_text" | "output_text") => fields
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| enc.count(t)),
        Some("image_url") => {
            let detail = fields
                .get("image_url")
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str);
            image_tokens(detail, None)
        }
        Some("input_image") => image_tokens(fields.get("detail").and_then(Value::as_str), None),
        _ => enc.count(&part.to_string()),
    }
}

/// `prompt` / `input`: a string, an array of strings, or (already) token ids.
fn text_or_ids(enc: Encoding, value: &Value) -> u64 {
    match value {
        Value::String(text) => enc.count(text),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                other => text_or_ids(enc, other),
            })
            .sum(),
        Value::Null => 0,
        other => enc.count(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn known_counts() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(
            Encoding::Cl100kBase.count("tiktoken is great!"),
            6,
            "the tiktoken README example"
        );
        assert_eq!(Encoding::O200kBase.count(""), 0);
    }

    #[test]
    fn models_pick_their_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5",
            "o3-mini",
            "o1",
            "x-new",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::Cl100kBase, "{m}");
        }
    }

    #[test]
    fn chat_counts_overheads_like_openai() {
        // The OpenAI cookbook's rule: 3 per message, 1 per name, 3 for the reply.
        let body = JsonBody::parse(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .unwrap();
        let user = Encoding::O200kBase.count("user");
        assert_eq!(
            prompt_tokens(Endpoint::ChatCompletions, "gpt-4o", &body),
            3 + user + 2 + 3
        );
        let named = JsonBody::parse(
            br#"{"messages":[{"role":"user","name":"bob","content":"hello world"}]}"#,
        )
        .unwrap();
        let bob = Encoding::O200kBase.count("bob");
        assert_eq!(
            prompt_tokens(Endpoint::ChatCompletions, "gpt-4o", &named),
            3 + user + 1 + bob + 2 + 3
        );
    }

    #[test]
    fn images_follow_the_tile_rule() {
        assert_eq!(image_tokens(Some("low"), Some((4096, 4096))), 85);
        // 1024×1024 high: scaled to 768×768, 4 tiles.
        assert_eq!(image_tokens(Some("high"), Some((1024, 1024))), 765);
        // 2048×4096: fit to 1024×2048, shortest side to 768 → 768×1536, 2×3 tiles.
        assert_eq!(image_tokens(None, Some((2048, 4096))), 85 + 170 * 6);
        assert_eq!(image_tokens(Some("auto"), None), 765);
        let body = JsonBody::parse(br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}]}"#).unwrap();
        let user = Encoding::O200kBase.count("user");
        assert_eq!(
            prompt_tokens(Endpoint::ChatCompletions, "gpt-4o", &body),
            3 + user + 2 + 85 + 3
        );
    }

    #[test]
    fn other_endpoints() {
        let emb = JsonBody::parse(br#"{"input":["hello world","hello world"]}"#).unwrap();
        assert_eq!(
            prompt_tokens(Endpoint::Embeddings, "text-embedding-3-small", &emb),
            4
        );
        let ids = JsonBody::parse(br#"{"prompt":[1,2,3]}"#).unwrap();
        assert_eq!(
            prompt_tokens(Endpoint::Completions, "gpt-3.5-turbo-instruct", &ids),
            3
        );
        let resp = JsonBody::parse(br#"{"input":"hello world"}"#).unwrap();
        assert_eq!(prompt_tokens(Endpoint::Responses, "gpt-4o", &resp), 2 + 3);
    }

    /// Over the eval prompts (several languages, long and short) sent four ways: the
    /// bound is never below the exact count, and the estimate stays near it.
    #[test]
    fn the_bound_holds_and_the_estimate_is_near_the_exact_count() {
        use crate::openai::request_text::extract;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/eval");
        let mut ratios = Vec::new();
        for file in ["benign.jsonl", "jailbreak.jsonl"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            for line in text.lines().step_by(7) {
                let row: Value = serde_json::from_str(line).unwrap();
                let prompt = row["text"].as_str().unwrap();
                let shapes = [
                    (
                        Endpoint::ChatCompletions,
                        serde_json::json!({"model": "gpt-4o", "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": prompt}]}),
                    ),
                    (
                        Endpoint::ChatCompletions,
                        serde_json::json!({"model": "gpt-4o", "messages": [
                        {"role": "user", "name": "a", "content": [{"type": "text", "text": prompt},
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
                        "tools": [{"type": "function", "function": {"name": "f", "description": prompt,
                            "parameters": {"type": "object", "properties": {"x": {"type": "number", "minimum": 1e2}}}}}]}),
                    ),
                    (
                        Endpoint::Responses,
                        serde_json::json!({"model": "gpt-4o", "instructions": "Be brief.",
                        "input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]}),
                    ),
                    (
                        Endpoint::Embeddings,
                        serde_json::json!({"model": "text-embedding-3-small", "input": [prompt, prompt]}),
                    ),
                ];
                for (endpoint, value) in shapes {
                    let body = JsonBody::parse(value.to_string().as_bytes()).unwrap();
                    let model = value["model"].as_str().unwrap();
                    let texts = extract(endpoint, &body, Some(model)).unwrap();
                    let size = PromptSize::of(endpoint, &texts, &body);
                    let exact = prompt_tokens(endpoint, model, &body);
                    assert!(
                        size.upper_bound >= exact,
                        "{endpoint:?} {size:?} < {exact}: {prompt:.80}"
                    );
                    ratios.push(size.estimate as f64 / exact as f64);
                }
            }
        }
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q) as usize];
        eprintln!(
            "estimate / exact over {} bodies: p5 {:.2}, p50 {:.2}, p95 {:.2}",
            ratios.len(),
            at(0.05),
            at(0.5),
            at(0.95)
        );
        assert!(at(0.5) > 0.8 && at(0.5) < 1.3, "median {:.2}", at(0.5));
        assert!(at(0.05) > 0.5 && at(0.95) < 2.0);
    }
}
