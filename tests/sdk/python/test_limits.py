"""Warden's own 429s through the official SDK: the SDK reads Warden's retry-after,
waits that long, and its retry succeeds."""

from __future__ import annotations

import time

import openai
import pytest

from sdkhelp import CHAT_MODEL, assert_error_envelope, reply_for


def _exhaust(c: openai.OpenAI) -> openai.RateLimitError:
    """Spends the user's 40 requests/minute; returns Warden's first 429."""
    for _ in range(100):
        try:
            c.models.list()
        except openai.RateLimitError as e:
            return e
    raise AssertionError("Warden never answered 429 within 100 requests")


def test_sdk_honours_wardens_retry_after_and_succeeds(make_client, gw, standin):
    user = "burst-" + str(time.monotonic_ns())
    refused = _exhaust(make_client(user, key=gw.limited_key, max_retries=0))
    inner = assert_error_envelope(refused, 429)
    assert inner["code"] == "rate_limit_exceeded"
    headers = refused.response.headers
    retry_ms = int(headers["retry-after-ms"])
    # 40 per minute: one request frees up every 1.5 s.
    assert 1000 <= retry_ms <= 1500, headers
    assert headers.get("x-warden-request-id")

    standin.clear()
    c = make_client(user, key=gw.limited_key, max_retries=2)
    t0 = time.monotonic()
    raw = c.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "after the wait"}]
    )
    took = time.monotonic() - t0
    resp = raw.parse()
    assert resp.choices[0].message.content == reply_for("after the wait")
    assert raw.retries_taken >= 1, "the first attempt should have met Warden's 429"
    # The SDK's own first backoff is at most 0.5 s; waiting ~1 s or more means it used
    # Warden's retry-after-ms.
    assert took >= 0.9, f"retried after {took:.2f}s: retry-after not honoured"
    # Warden refused locally: only the successful attempt reached upstream.
    assert len(standin.requests_to("/chat/completions")) == 1


def test_without_retries_the_sdk_raises_rate_limit_error(make_client, gw):
    user = "burst-noretry-" + str(time.monotonic_ns())
    c = make_client(user, key=gw.limited_key, max_retries=0)
    refused = _exhaust(c)
    with pytest.raises(openai.RateLimitError):
        c.models.list()
    assert refused.response.headers.get("retry-after")
