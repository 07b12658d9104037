"""Chat Completions through Warden with the official SDK, plain and streaming."""

from __future__ import annotations

from sdkhelp import CHAT_MODEL, PASSTHROUGH_EXTRA, assert_clean_upstream, reply_for


def test_chat_plain(client, standin, gw):
    text = "Hi there, what is the capital of France?"
    resp = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
        ],
    )
    assert resp.object == "chat.completion"
    assert resp.id
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == reply_for(text)
    assert choice.finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0

    rec = standin.only("/chat/completions")
    assert rec["method"] == "POST"
    assert rec["body"]["model"] == CHAT_MODEL
    assert rec["body"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": text},
    ]
    assert_clean_upstream(rec, gw)


def test_chat_n_choices(client):
    resp = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "two please"}], n=2
    )
    assert [c.index for c in resp.choices] == [0, 1]


def test_chat_stream(client, standin, gw):
    text = "Stream me a short greeting please"
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks, "no chunks received"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "chunk ids differ within one stream"
    content = "".join(
        (c.choices[0].delta.content or "") for c in chunks if c.choices
    )
    assert content == reply_for(text)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # include_usage: one last chunk with no choices and the usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    rec = standin.only("/chat/completions")
    assert rec["body"]["stream"] is True
    assert rec["body"]["stream_options"] == {"include_usage": True}
    assert_clean_upstream(rec, gw)


def test_chat_stream_context_manager_and_response_headers(client):
    with client.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "headers?"}], stream=True
    ) as raw:
        assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
        assert "text/event-stream" in raw.headers.get("content-type", "")
        text = "".join(
            (c.choices[0].delta.content or "") for c in raw.parse() if c.choices
        )
    assert text == reply_for("headers?")


def test_chat_request_ids(client):
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "ids"}]
    )
    warden_id = raw.headers.get("x-warden-request-id")
    upstream_id = raw.headers.get("x-request-id")
    assert warden_id, f"no x-warden-request-id in {dict(raw.headers)}"
    assert upstream_id, f"upstream x-request-id not passed through: {dict(raw.headers)}"
    assert raw.request_id == upstream_id
    assert upstream_id != warden_id, "x-request-id is Warden's own id, not upstream's"
    completion = raw.parse()
    assert completion._request_id == upstream_id
    assert completion.choices[0].message.content == reply_for("ids")

    raw2 = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "ids"}]
    )
    assert raw2.headers.get("x-warden-request-id")
    assert raw2.headers.get("x-warden-request-id") != warden_id, "warden request ids repeat"


def test_chat_unknown_fields_pass_through(client, standin):
    client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "passthrough"}],
        temperature=0.25,
        extra_body=PASSTHROUGH_EXTRA,
    )
    body = standin.only("/chat/completions")["body"]
    for k, v in PASSTHROUGH_EXTRA.items():
        assert k in body, f"{k!r} did not reach upstream: {body}"
        assert body[k] == v, f"{k!r} changed on the way: {body[k]!r} != {v!r}"
    assert body["temperature"] == 0.25


def test_chat_stream_unknown_fields_pass_through(client, standin):
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "passthrough stream"}],
        stream=True,
        extra_body=PASSTHROUGH_EXTRA,
    )
    for _ in stream:
        pass
    body = standin.only("/chat/completions")["body"]
    for k, v in PASSTHROUGH_EXTRA.items():
        assert body.get(k) == v, f"{k!r}: {body.get(k)!r} != {v!r}"
