"""Errors reach the SDK as its own exception classes, in OpenAI's envelope."""

from __future__ import annotations

import time

import openai
import pytest

from sdkhelp import CHAT_MODEL, COMPLETIONS_MODEL, RESPONSES_MODEL, assert_error_envelope, reply_for

MSG = [{"role": "user", "content": "hello"}]


def test_wrong_key_is_authentication_error(make_client, standin):
    c = make_client("alice", key="wk-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model=CHAT_MODEL, messages=MSG)
    inner = assert_error_envelope(ei.value, 401)
    assert inner["code"] == "invalid_api_key", inner
    assert "wk-not-a-real-key" not in ei.value.response.text, "the rejected key is echoed back"
    assert standin.requests() == [], "a request with a bad key reached upstream"


def test_upstream_key_is_not_a_valid_virtual_key(make_client, gw, standin):
    c = make_client("alice", key=gw.standin_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model=CHAT_MODEL, messages=MSG)
    assert_error_envelope(ei.value, 401)
    assert standin.requests() == []


def test_missing_end_user_is_bad_request(make_client, standin):
    c = make_client(user=None, max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(model=CHAT_MODEL, messages=MSG)
    assert_error_envelope(ei.value, 400)
    assert standin.requests() == [], "a request without an end user reached upstream"


def test_error_responses_carry_warden_request_id(make_client):
    c = make_client("alice", key="wk-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.models.list()
    assert ei.value.response.headers.get("x-warden-request-id"), dict(ei.value.response.headers)


def test_upstream_429_is_rate_limit_error(make_client, standin):
    c = make_client("alice", max_retries=0)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(
            model=CHAT_MODEL, messages=MSG, extra_headers={"x-standin-fault": "status=429"}
        )
    assert_error_envelope(ei.value, 429)
    assert ei.value.response.headers.get("x-warden-request-id")
    assert standin.requests_to("/chat/completions"), "Warden answered 429 without asking upstream"


def test_upstream_500_is_internal_server_error(make_client, standin):
    c = make_client("alice", max_retries=0)
    with pytest.raises(openai.InternalServerError) as ei:
        c.chat.completions.create(
            model=CHAT_MODEL, messages=MSG, extra_headers={"x-standin-fault": "status=500"}
        )
    assert ei.value.status_code >= 500
    assert_error_envelope(ei.value, ei.value.status_code)
    assert standin.requests_to("/chat/completions")


def test_upstream_400_is_bad_request_error(make_client):
    c = make_client("alice", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(
            model=CHAT_MODEL, messages=MSG, extra_headers={"x-standin-fault": "status=400"}
        )
    assert_error_envelope(ei.value, 400)


def test_sdk_retries_through_warden(make_client, standin):
    c = make_client("alice")  # the SDK's default retry policy
    standin.queue_fault("status=500", 1, path="/v1/chat/completions")
    t0 = time.monotonic()
    resp = c.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "retry"}])
    assert resp.choices[0].message.content == reply_for("retry")
    assert time.monotonic() - t0 < 30
    # The fault was consumed: by Warden's own retry or by the SDK's retry.
    assert len(standin.requests_to("/chat/completions")) >= 2


def test_sdk_retries_429_through_warden(make_client, standin):
    c = make_client("alice")
    standin.queue_fault("status=429", 1, path="/v1/embeddings")
    resp = c.embeddings.create(model="text-embedding-3-small", input="retry", encoding_format="float")
    assert len(resp.data) == 1
    assert len(standin.requests_to("/embeddings")) >= 2


def test_unknown_path_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as ei:
        client.with_options(max_retries=0).get("/nope", cast_to=object)
    assert_error_envelope(ei.value, 404)


def test_wrong_type_is_bad_request(make_client):
    c = make_client("alice", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(model=CHAT_MODEL, messages="this should be a list")
    assert_error_envelope(ei.value, 400)


def _drain_expecting_error(stream):
    """Iterate a stream; return (items, exception raised while iterating or None)."""
    items = []
    try:
        for item in stream:
            items.append(item)
    except Exception as e:  # the SDK must raise *something*: that is the point
        return items, e
    return items, None


def test_cut_chat_stream_raises(make_client, standin):
    c = make_client("alice", max_retries=0, timeout=20)
    t0 = time.monotonic()
    stream = c.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "a long answer that will be cut short"}],
        stream=True,
        extra_headers={"x-standin-fault": "cut_after=2"},
    )
    items, err = _drain_expecting_error(stream)
    elapsed = time.monotonic() - t0
    assert err is not None, (
        f"a stream cut by upstream ended silently after {len(items)} chunks"
    )
    assert isinstance(err, openai.APIError), f"unexpected exception type {type(err)!r}: {err}"
    assert not isinstance(err, openai.APITimeoutError), f"the cut stream hung until timeout ({elapsed:.1f}s)"
    assert elapsed < 15, f"took {elapsed:.1f}s to notice the cut"


def test_cut_completions_stream_raises(make_client):
    c = make_client("alice", max_retries=0, timeout=20)
    stream = c.completions.create(
        model=COMPLETIONS_MODEL,
        prompt="a long answer that will be cut short",
        stream=True,
        extra_headers={"x-standin-fault": "cut_after=2"},
    )
    items, err = _drain_expecting_error(stream)
    assert err is not None, f"a stream cut by upstream ended silently after {len(items)} chunks"
    assert isinstance(err, openai.APIError) and not isinstance(err, openai.APITimeoutError), repr(err)


def test_cut_responses_stream_fails(make_client):
    c = make_client("alice", max_retries=0, timeout=20)
    t0 = time.monotonic()
    stream = c.responses.create(
        model=RESPONSES_MODEL,
        input="a long answer that will be cut short",
        stream=True,
        extra_headers={"x-standin-fault": "cut_after=2"},
    )
    events, err = _drain_expecting_error(stream)
    types = [getattr(e, "type", None) for e in events]
    assert "response.completed" not in types, types
    if err is not None:
        assert isinstance(err, openai.APIError) and not isinstance(err, openai.APITimeoutError), repr(err)
    else:
        # The Responses stream may also end in an `error` / `response.failed` event, which the
        # SDK yields rather than raises; ending quietly is not acceptable.
        assert types and types[-1] in ("error", "response.failed"), (
            f"a Responses stream cut by upstream ended silently: {types}"
        )
    assert time.monotonic() - t0 < 15


def test_stream_with_upstream_429_before_first_byte(make_client):
    c = make_client("alice", max_retries=0)
    with pytest.raises(openai.RateLimitError) as ei:
        c.chat.completions.create(
            model=CHAT_MODEL, messages=MSG, stream=True,
            extra_headers={"x-standin-fault": "status=429"},
        )
    assert_error_envelope(ei.value, 429)


def test_slow_first_byte_still_works(make_client):
    c = make_client("alice", max_retries=0)
    resp = c.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "slow"}],
        extra_headers={"x-standin-fault": "delay_ms=300"},
    )
    assert resp.choices[0].message.content == reply_for("slow")
