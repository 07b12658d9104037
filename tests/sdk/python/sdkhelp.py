"""Shared assertions for the Python SDK suite (imported by the test modules)."""

from __future__ import annotations

import json
from typing import Any

import openai

CHAT_MODEL = "gpt-4o-mini"
RESPONSES_MODEL = "gpt-4.1-mini"
COMPLETIONS_MODEL = "gpt-3.5-turbo-instruct"
EMBEDDINGS_MODEL = "text-embedding-3-small"
MODERATION_MODEL = "omni-moderation-latest"
IMAGE_MODEL = "gpt-image-1"

REPLY_PREFIX = "Hello from the stand-in. You said: "

# Unknown / newer request fields that Warden must pass through untouched.
PASSTHROUGH_EXTRA = {
    "prompt_cache_key": "k1",
    "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "score"}}},
    "service_tier": "flex",
    "metadata": {"a": "b"},
}


def reply_for(text: str) -> str:
    """The stand-in's deterministic answer to a last user text."""
    return REPLY_PREFIX + text[:40]


def assert_error_envelope(err: openai.APIStatusError, status: int) -> dict:
    """The error response carries OpenAI's envelope with all four keys; returns `error`."""
    assert err.status_code == status, f"status {err.status_code} != {status}: {err}"
    try:
        body = err.response.json()
    except Exception as e:
        raise AssertionError(f"error body is not JSON: {err.response.text!r}") from e
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"not an OpenAI error envelope: {body!r}"
    )
    inner = body["error"]
    for k in ("message", "type", "param", "code"):
        assert k in inner, f"error envelope lacks {k!r}: {body}"
    assert isinstance(inner["message"], str) and inner["message"], body
    assert isinstance(inner["type"], str) and inner["type"], body
    assert inner["param"] is None or isinstance(inner["param"], str), body
    assert inner["code"] is None or isinstance(inner["code"], str), body
    # The SDK exposes the same fields.
    assert err.code == inner["code"], (err.code, inner)
    assert err.type == inner["type"], (err.type, inner)
    return inner


def body_text(rec: dict) -> str:
    """The raw body the stand-in received (falls back to re-serialising `body`)."""
    t = rec.get("body_text")
    if isinstance(t, str):
        return t
    return json.dumps(rec.get("body"))


def assert_clean_upstream(rec: dict, gw: Any) -> None:
    """The upstream call used Warden's upstream key and leaked nothing client-side."""
    headers = {k.lower(): v for k, v in (rec.get("headers") or {}).items()}
    assert headers.get("authorization") == f"Bearer {gw.standin_key}", (
        f"upstream authorization header is {headers.get('authorization')!r}, "
        "expected Warden's upstream key"
    )
    assert "x-warden-user" not in headers, f"x-warden-user reached upstream: {headers}"
    blob = json.dumps(headers) + body_text(rec)
    for secret, what in (
        (gw.key, "sdk-app virtual key"),
        (gw.trusted_key, "trusted-svc virtual key"),
        (gw.safety_secret, "safety identifier secret"),
    ):
        assert secret not in blob, f"the {what} reached upstream"


def assert_hash_id(value: Any, *raw_ids: str) -> str:
    """A safety identifier / user hash: a non-empty string <= 64 chars hiding the raw id."""
    assert isinstance(value, str) and value, f"expected a hashed end-user id, got {value!r}"
    assert len(value) <= 64, f"identifier longer than 64 chars: {value!r}"
    for raw in raw_ids:
        assert raw.lower() not in value.lower(), f"identifier {value!r} contains {raw!r}"
        assert value != raw
    return value
