"""Realtime sessions through Warden with the official SDK's realtime client
(`client.realtime.connect`, the `websockets` extra) and its client secrets call."""

from __future__ import annotations

import openai
import pytest

REALTIME_MODEL = "gpt-realtime"


def _events_until_done(conn) -> list:
    events = []
    for event in conn:
        events.append(event)
        if event.type == "response.done":
            return events
    raise AssertionError(f"the session ended before response.done: {[e.type for e in events]}")


def _user_text(text: str) -> dict:
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def test_text_session_end_to_end(make_client, standin):
    client = make_client("rt-alice")
    with client.realtime.connect(model=REALTIME_MODEL) as conn:
        first = conn.recv()
        assert first.type == "session.created"
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        assert conn.recv().type == "session.updated"
        conn.conversation.item.create(item=_user_text("hello realtime"))
        assert conn.recv().type == "conversation.item.added"
        conn.response.create()
        events = _events_until_done(conn)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from the stand-in. You said: hello realtime"
    done = events[-1]
    assert done.response.status == "completed"
    assert done.response.usage.output_tokens > 0
    handshake = standin.last("/realtime")
    headers = {k.lower(): v for k, v in handshake["headers"].items()}
    assert headers.get("openai-safety-identifier"), "Warden sets the safety identifier header"
    assert "rt-alice" not in headers["openai-safety-identifier"]


def test_flagged_user_item_gets_error_event(make_client):
    client = make_client("rt-bob")
    with client.realtime.connect(model=REALTIME_MODEL) as conn:
        conn.recv()
        conn.conversation.item.create(item=_user_text("FLAG:violence please"), event_id="evt_bad")
        error = conn.recv()
        assert error.type == "error"
        assert error.error.code == "content_filter"
        assert error.error.event_id == "evt_bad"


def test_flagged_transcript_cancelled_mid_response(make_client):
    client = make_client("rt-carol")
    with client.realtime.connect(model=REALTIME_MODEL) as conn:
        conn.recv()
        conn.conversation.item.create(item=_user_text("a story SAY_FLAG=violence SLOW_REPLY"))
        conn.recv()
        conn.response.create()
        events = _events_until_done(conn)
    errors = [e for e in events if e.type == "error"]
    assert errors and errors[0].error.code == "content_filter"
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert "FLAG:" not in transcript
    assert events[-1].response.status == "cancelled"


def test_concurrent_session_limit(make_client):
    client = make_client("rt-dave")
    with client.realtime.connect(model=REALTIME_MODEL) as one, client.realtime.connect(
        model=REALTIME_MODEL
    ) as two:
        one.recv()
        two.recv()
        with pytest.raises(Exception) as refused:
            with client.realtime.connect(model=REALTIME_MODEL) as three:
                three.recv()
        assert "429" in str(refused.value), str(refused.value)


def test_client_secret_for_identified_user_only(make_client, gw):
    minted = make_client("rt-erin").realtime.client_secrets.create(
        session={"type": "realtime", "model": REALTIME_MODEL, "instructions": "Be kind."},
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert minted.value.startswith("ek_")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        make_client(None, key=gw.trusted_key).realtime.client_secrets.create(
            session={"type": "realtime", "model": REALTIME_MODEL}
        )
    assert refused.value.code == "end_user_required"
