"""End-user identity: Warden's keyed-hash safety_identifier / user on upstream calls."""

from __future__ import annotations

from sdkhelp import (
    CHAT_MODEL,
    COMPLETIONS_MODEL,
    EMBEDDINGS_MODEL,
    IMAGE_MODEL,
    RESPONSES_MODEL,
    assert_clean_upstream,
    assert_hash_id,
    body_text,
)


def _chat(c, **kw):
    return c.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "who am i"}], **kw
    )


def _chat_sid(make_client, standin, user):
    _chat(make_client(user))
    return standin.last("/chat/completions")["body"].get("safety_identifier")


def test_chat_safety_identifier_stable_per_user(make_client, standin, gw):
    a1 = assert_hash_id(_chat_sid(make_client, standin, "alice"), "alice")
    a2 = assert_hash_id(_chat_sid(make_client, standin, "alice"), "alice")
    b = assert_hash_id(_chat_sid(make_client, standin, "bob"), "bob")
    assert a1 == a2, "alice's safety_identifier is not stable"
    assert a1 != b, "alice and bob share a safety_identifier"
    assert gw.safety_secret not in a1
    for rec in standin.requests_to("/chat/completions"):
        assert_clean_upstream(rec, gw)


def test_chat_stream_gets_safety_identifier(make_client, standin):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    for _ in make_client("alice").chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "stream"}], stream=True
    ):
        pass
    assert standin.only("/chat/completions")["body"].get("safety_identifier") == alice


def test_responses_safety_identifier(make_client, standin, gw):
    alice_chat = _chat_sid(make_client, standin, "alice")
    standin.clear()
    c = make_client("alice")
    c.responses.create(model=RESPONSES_MODEL, input="who am i")
    c.responses.create(model=RESPONSES_MODEL, input="who am i again")
    make_client("bob").responses.create(model=RESPONSES_MODEL, input="and me")
    a1, a2, b = (r["body"].get("safety_identifier") for r in standin.requests_to("/responses"))
    assert_hash_id(a1, "alice")
    assert_hash_id(b, "bob")
    assert a1 == a2 == alice_chat, "alice's identifier differs between requests or APIs"
    assert a1 != b


def test_responses_stream_gets_safety_identifier(make_client, standin):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    for _ in make_client("alice").responses.create(model=RESPONSES_MODEL, input="s", stream=True):
        pass
    assert standin.only("/responses")["body"].get("safety_identifier") == alice


def test_client_supplied_identity_is_replaced_chat(make_client, standin):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    _chat(make_client("alice"), safety_identifier="client-chosen-sid", user="client-chosen-user")
    rec = standin.only("/chat/completions")
    body = rec["body"]
    assert body.get("safety_identifier") == alice, body.get("safety_identifier")
    assert body.get("user") in (None, alice), f"client `user` forwarded: {body.get('user')!r}"
    raw = body_text(rec)
    assert "client-chosen-sid" not in raw and "client-chosen-user" not in raw


def test_client_supplied_identity_is_replaced_responses(make_client, standin):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    make_client("alice").responses.create(
        model=RESPONSES_MODEL,
        input="x",
        safety_identifier="client-chosen-sid",
        extra_body={"user": "client-chosen-user"},
    )
    rec = standin.only("/responses")
    assert rec["body"].get("safety_identifier") == alice
    assert rec["body"].get("user") in (None, alice), rec["body"].get("user")
    raw = body_text(rec)
    assert "client-chosen-sid" not in raw and "client-chosen-user" not in raw


def test_user_field_hash_on_embeddings_completions_images(make_client, standin):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    c = make_client("alice")
    c.embeddings.create(model=EMBEDDINGS_MODEL, input="x", user="client-chosen-user")
    c.completions.create(model=COMPLETIONS_MODEL, prompt="x", user="client-chosen-user")
    c.images.generate(model=IMAGE_MODEL, prompt="x", user="client-chosen-user")
    for path in ("/embeddings", "/completions", "/images/generations"):
        rec = standin.only(path)
        assert rec["body"].get("user") == alice, f"{path}: user={rec['body'].get('user')!r}"
        assert "client-chosen-user" not in body_text(rec), path

    standin.clear()
    b = make_client("bob")
    b.embeddings.create(model=EMBEDDINGS_MODEL, input="x")
    bob = standin.only("/embeddings")["body"].get("user")
    assert_hash_id(bob, "bob")
    assert bob != alice


def test_trusted_service_user_field(make_client, standin, gw):
    alice = _chat_sid(make_client, standin, "alice")
    standin.clear()
    svc = make_client(user=None, key=gw.trusted_key)
    resp = svc.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "trusted"}], user="carol"
    )
    assert resp.choices[0].message.content
    rec = standin.only("/chat/completions")
    sid = assert_hash_id(rec["body"].get("safety_identifier"), "carol")
    assert sid != alice
    assert rec["body"].get("user") in (None, sid), f"raw `user` forwarded: {rec['body'].get('user')!r}"
    assert '"carol"' not in body_text(rec), "the raw end-user id reached upstream"
    assert_clean_upstream(rec, gw)

    # Stable for carol across requests.
    standin.clear()
    svc.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "trusted"}], user="carol"
    )
    assert standin.only("/chat/completions")["body"].get("safety_identifier") == sid


def test_trusted_service_user_field_embeddings(make_client, standin, gw):
    svc = make_client(user=None, key=gw.trusted_key)
    svc.embeddings.create(model=EMBEDDINGS_MODEL, input="x", user="carol")
    rec = standin.only("/embeddings")
    assert_hash_id(rec["body"].get("user"), "carol")
