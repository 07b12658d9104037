"""The REST routes beyond the model endpoints (issue 16) through the official SDK: files
and batch checks, uploads, batches, background responses, conversations, audio and image
edits, and object ownership between two virtual keys."""

from __future__ import annotations

import json
import time

import openai
import pytest

from sdkhelp import CHAT_MODEL, RESPONSES_MODEL, assert_error_envelope, assert_hash_id, body_text


def batch_line(custom_id: str, text: str) -> str:
    return json.dumps({
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": text}]},
    })


@pytest.fixture
def other(make_client, gw):
    """A second application: another virtual key, its own end user."""
    return make_client(user="bob", key=gw.trusted_key)


def test_batch_file_with_a_flagged_line_is_refused_and_not_uploaded(client, standin):
    content = "\n".join([
        batch_line("a", "What is the capital of France?"),
        batch_line("b", "FLAG:violence describe it"),
        batch_line("c", "A haiku about rain"),
    ]).encode()
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("batch.jsonl", content), purpose="batch")
    inner = assert_error_envelope(err.value, 400)
    assert inner["code"] == "file_lines_refused"
    assert "Line 2" in inner["message"] and "Line 1" not in inner["message"], inner
    assert standin.requests_to("/files") == []


def test_clean_batch_runs_with_a_safety_identifier_on_every_line(client, standin):
    content = ("\n".join([batch_line("a", "Capital of France?"), batch_line("b", "A haiku")]) + "\n").encode()
    uploaded = client.files.create(file=("batch.jsonl", content), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch"
    sent = body_text(standin.only("/files"))
    lines = [json.loads(l) for l in sent.splitlines() if l.startswith("{")]
    assert len(lines) == 2
    ids = {l["body"]["safety_identifier"] for l in lines}
    assert len(ids) == 1
    assert_hash_id(ids.pop(), "alice")

    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    deadline = time.monotonic() + 10
    while batch.status != "completed":
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    assert batch.output_file_id
    output = client.files.content(batch.output_file_id).text
    answers = [json.loads(l) for l in output.splitlines()]
    assert [a["custom_id"] for a in answers] == ["a", "b"]
    assert all(a["response"]["status_code"] == 200 for a in answers)
    assert batch.id in [b.id for b in client.batches.list()]


def test_a_file_of_one_key_is_invisible_to_another(client, other, standin):
    mine = client.files.create(file=("notes.txt", b"private notes"), purpose="user_data")
    theirs = other.files.create(file=("theirs.txt", b"their notes"), purpose="user_data")
    with pytest.raises(openai.NotFoundError) as err:
        other.files.retrieve(mine.id)
    assert assert_error_envelope(err.value, 404)["code"] == "object_not_found"
    assert mine.id not in [f.id for f in other.files.list()]
    assert theirs.id in [f.id for f in other.files.list()]
    with pytest.raises(openai.NotFoundError):
        other.files.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(mine.id)
    assert [r for r in standin.requests() if r["method"] == "DELETE"] == []
    assert client.files.retrieve(mine.id).id == mine.id
    assert client.files.delete(mine.id).deleted is True


def test_uploads_in_parts_stream_through_and_the_file_is_owned(client, other):
    chunk = b"x" * (1024 * 1024)
    upload = client.uploads.create(
        bytes=3 * len(chunk), filename="big.bin", mime_type="application/octet-stream", purpose="user_data"
    )
    parts = [client.uploads.parts.create(upload_id=upload.id, data=chunk) for _ in range(3)]
    done = client.uploads.complete(upload_id=upload.id, part_ids=[p.id for p in parts])
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes >= 3 * len(chunk)
    assert client.files.retrieve(done.file.id).id == done.file.id
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(done.file.id)
    with pytest.raises(openai.NotFoundError):
        other.uploads.parts.create(upload_id=upload.id, data=b"sneaky")


def test_upload_of_a_batch_file_in_parts_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.create(bytes=10, filename="b.jsonl", mime_type="application/jsonl", purpose="batch")
    assert assert_error_envelope(err.value, 400)["code"] == "purpose_not_checkable"


def test_background_response_is_polled_and_cancelled(client, other):
    created = client.responses.create(model=RESPONSES_MODEL, input="Write a long story", background=True)
    assert created.status == "queued"
    polled = client.responses.retrieve(created.id)
    assert polled.status == "in_progress"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(created.id)
    items = client.responses.input_items.list(created.id)
    assert len(items.data) == 1
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"


def test_stored_chat_completion_is_listed_for_its_owner_only(client, other):
    made = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "remember me"}], store=True
    )
    assert client.chat.completions.retrieve(made.id).id == made.id
    assert made.id in [c.id for c in client.chat.completions.list()]
    assert made.id not in [c.id for c in other.chat.completions.list()]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.retrieve(made.id)


def test_conversation_items_are_checked_and_owned(client, other):
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Hello"}])
    assert conv.object == "conversation"
    assert len(client.conversations.items.list(conv.id).data) == 1
    with pytest.raises(openai.NotFoundError):
        other.conversations.retrieve(conv.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.conversations.items.create(
            conv.id, items=[{"type": "message", "role": "user", "content": "FLAG:violence now"}]
        )
    assert assert_error_envelope(err.value, 400)["code"] == "content_filter"


def test_speech_input_is_moderated(client, standin):
    audio = client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="Good morning")
    assert len(audio.content) > 0
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="FLAG:violence now")
    assert assert_error_envelope(err.value, 400)["code"] == "content_filter"
    assert len(standin.requests_to("/audio/speech")) == 1


def test_transcription_streams_through(client):
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", b"hello there"))
    assert text.text == "hello there"


def test_image_edit_prompt_is_moderated_and_user_is_hashed(client, standin):
    edited = client.images.edit(model="gpt-image-1", image=("a.png", b"\x89PNG fake"), prompt="Add a hat")
    assert edited.data
    sent = body_text(standin.only("/images/edits"))
    assert 'name="safety_identifier"' in sent and "alice" not in sent
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(model="gpt-image-1", image=("a.png", b"\x89PNG fake"), prompt="FLAG:violence")
    assert assert_error_envelope(err.value, 400)["code"] == "content_filter"
    assert len(standin.requests_to("/images/edits")) == 1
