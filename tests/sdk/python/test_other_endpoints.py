"""Embeddings, moderations, images and models through Warden with the official SDK."""

from __future__ import annotations

import base64

from sdkhelp import (
    EMBEDDINGS_MODEL,
    IMAGE_MODEL,
    MODERATION_MODEL,
    assert_clean_upstream,
    assert_hash_id,
)

CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
]


def test_embeddings_default_encoding(client, standin, gw):
    # The SDK asks for base64 by default and decodes it itself.
    resp = client.embeddings.create(model=EMBEDDINGS_MODEL, input=["first text", "second text"])
    assert resp.object == "list"
    assert [d.index for d in resp.data] == [0, 1]
    for d in resp.data:
        assert d.object == "embedding"
        assert isinstance(d.embedding, list) and d.embedding
        assert all(isinstance(x, float) for x in d.embedding)

    rec = standin.only("/embeddings")
    assert rec["body"]["input"] == ["first text", "second text"]
    assert_hash_id(rec["body"].get("user"), "alice")
    assert_clean_upstream(rec, gw)


def test_embeddings_float(client, standin):
    resp = client.embeddings.create(model=EMBEDDINGS_MODEL, input="one", encoding_format="float")
    assert len(resp.data) == 1
    assert all(isinstance(x, float) for x in resp.data[0].embedding)
    assert standin.only("/embeddings")["body"]["encoding_format"] == "float"


def test_embeddings_request_ids(client):
    raw = client.embeddings.with_raw_response.create(model=EMBEDDINGS_MODEL, input="ids")
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")


def test_moderations(client, standin, gw):
    resp = client.moderations.create(
        model=MODERATION_MODEL, input=["a perfectly friendly sentence", "FLAG:violence test"]
    )
    assert resp.id and resp.model
    assert len(resp.results) == 2
    ok, flagged = resp.results
    assert ok.flagged is False
    assert flagged.flagged is True
    cats = flagged.model_dump(by_alias=True)["categories"]
    scores = flagged.model_dump(by_alias=True)["category_scores"]
    assert set(CATEGORIES) <= set(cats), sorted(cats)
    assert set(CATEGORIES) <= set(scores), sorted(scores)
    assert cats["violence"] is True
    assert flagged.category_scores.violence > 0.5

    rec = standin.only("/moderations")
    assert rec["body"]["input"] == ["a perfectly friendly sentence", "FLAG:violence test"]
    assert_clean_upstream(rec, gw)


def test_moderations_request_ids(client):
    raw = client.moderations.with_raw_response.create(input="ids")
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")


def test_images_generate(client, standin, gw):
    resp = client.images.generate(model=IMAGE_MODEL, prompt="a small red square", n=2)
    assert resp.data is not None and len(resp.data) == 2
    for img in resp.data:
        assert img.b64_json
        png = base64.b64decode(img.b64_json)
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), png[:16]

    rec = standin.only("/images/generations")
    assert rec["body"]["prompt"] == "a small red square"
    assert rec["body"]["n"] == 2
    assert_hash_id(rec["body"].get("user"), "alice")
    assert_clean_upstream(rec, gw)


def test_images_request_ids(client):
    raw = client.images.with_raw_response.generate(model=IMAGE_MODEL, prompt="ids")
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")


def test_models_list_and_retrieve(client, standin, gw):
    models = list(client.models.list())
    assert models, "empty model list"
    for m in models:
        assert m.object == "model"
        assert isinstance(m.id, str) and m.id
    first = models[0]
    got = client.models.retrieve(first.id)
    assert got.id == first.id
    assert got.object == "model"

    listed = standin.requests_to("/models")
    retrieved = standin.requests_to(f"/models/{first.id}")
    assert len(listed) >= 1 and len(retrieved) == 1, [r.get("path") for r in standin.requests()]
    for rec in listed + retrieved:
        assert rec["method"] == "GET"
        assert_clean_upstream(rec, gw)


def test_models_request_ids(client):
    raw = client.models.with_raw_response.list()
    assert raw.headers.get("x-warden-request-id"), dict(raw.headers)
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers.get("x-request-id")
