"""Legacy completions through Warden with the official SDK, plain and streaming."""

from __future__ import annotations

from sdkhelp import COMPLETIONS_MODEL, assert_clean_upstream, assert_hash_id


def test_completions_plain(client, standin, gw):
    resp = client.completions.create(model=COMPLETIONS_MODEL, prompt="Say hello", max_tokens=20)
    assert resp.object == "text_completion"
    assert len(resp.choices) == 1
    assert isinstance(resp.choices[0].text, str) and resp.choices[0].text
    assert "Hello from the stand-in" in resp.choices[0].text

    rec = standin.only("/completions")
    assert rec["body"]["prompt"] == "Say hello"
    assert rec["body"]["max_tokens"] == 20
    assert_hash_id(rec["body"].get("user"), "alice")
    assert_clean_upstream(rec, gw)


def test_completions_stream(client, standin, gw):
    stream = client.completions.create(model=COMPLETIONS_MODEL, prompt="Stream hello", stream=True)
    chunks = list(stream)
    assert chunks
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert "Hello from the stand-in" in text

    rec = standin.only("/completions")
    assert rec["body"]["stream"] is True
    assert_hash_id(rec["body"].get("user"), "alice")
    assert_clean_upstream(rec, gw)


def test_completions_request_ids(client):
    raw = client.completions.with_raw_response.create(model=COMPLETIONS_MODEL, prompt="ids")
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")
