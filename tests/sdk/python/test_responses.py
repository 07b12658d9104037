"""Responses API through Warden with the official SDK, plain and streaming."""

from __future__ import annotations

from sdkhelp import PASSTHROUGH_EXTRA, RESPONSES_MODEL, assert_clean_upstream, reply_for


def test_responses_plain(client, standin, gw):
    text = "Tell me something nice about otters"
    resp = client.responses.create(model=RESPONSES_MODEL, input=text, instructions="Be brief.")
    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.output_text == reply_for(text)
    assert resp.usage is not None and resp.usage.total_tokens > 0

    rec = standin.only("/responses")
    assert rec["method"] == "POST"
    assert rec["body"]["input"] == text
    assert rec["body"]["instructions"] == "Be brief."
    assert_clean_upstream(rec, gw)


def test_responses_message_items(client):
    text = "item style input"
    resp = client.responses.create(
        model=RESPONSES_MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": text}]}],
    )
    assert resp.output_text == reply_for(text)


def test_responses_stream(client, standin, gw):
    text = "Stream a response please"
    stream = client.responses.create(model=RESPONSES_MODEL, input=text, stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created", types
    assert types[-1] == "response.completed", types
    seq = [e.sequence_number for e in events]
    assert seq == sorted(seq) and len(set(seq)) == len(seq), f"sequence numbers {seq}"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == reply_for(text)
    assert events[-1].response.output_text == reply_for(text)

    rec = standin.only("/responses")
    assert rec["body"]["stream"] is True
    assert_clean_upstream(rec, gw)


def test_responses_stream_helper(client):
    text = "via the stream helper"
    with client.responses.stream(model=RESPONSES_MODEL, input=text) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == reply_for(text)


def test_responses_request_ids(client):
    raw = client.responses.with_raw_response.create(model=RESPONSES_MODEL, input="ids")
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")
    assert raw.parse().output_text == reply_for("ids")


def test_responses_unknown_fields_pass_through(client, standin):
    client.responses.create(
        model=RESPONSES_MODEL,
        input="passthrough",
        extra_body=PASSTHROUGH_EXTRA,
    )
    body = standin.only("/responses")["body"]
    for k, v in PASSTHROUGH_EXTRA.items():
        assert k in body, f"{k!r} did not reach upstream: {body}"
        assert body[k] == v, f"{k!r} changed on the way: {body[k]!r} != {v!r}"
