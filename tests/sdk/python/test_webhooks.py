"""OpenAI's safety webhooks, cross-checked with the official SDK: a delivery that
`client.webhooks.verify_signature` accepts is accepted by Warden and acted on; one it
rejects is rejected by Warden too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request

import openai
import pytest

from conftest import _URLOPENER, _http
from sdkhelp import CHAT_MODEL


def _sign(secret: str, webhook_id: str, ts: int, payload: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{ts}.{payload}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def _post_hook(gw, headers: dict, payload: str) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{gw.admin_url}/hooks/openai",
        data=payload.encode(),
        method="POST",
        headers={"content-type": "application/json", **headers},
    )
    try:
        with _URLOPENER.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _ask(client):
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hello"}]
    )


def test_sdk_verified_delivery_suspends_the_user(gw, make_client, standin):
    user = "py-webhook-" + secrets.token_hex(4)
    client = make_client(user, max_retries=0)
    _ask(client)
    sid = standin.last("/chat/completions")["body"]["safety_identifier"]

    case_id = "C-py-" + secrets.token_hex(6)
    status, _ = _http(
        "POST",
        f"{gw.standin_url}/_standin/cases",
        {
            "id": case_id,
            "entity_identifier": sid,
            "reason": "cyber_abuse",
            "notice": {"type": "warning"},
        },
    )
    assert status == 200

    webhook_id = "msg_" + secrets.token_hex(8)
    ts = int(time.time())
    payload = json.dumps(
        {
            "id": "evt_" + secrets.token_hex(6),
            "object": "event",
            "created_at": ts,
            "type": "safety.warning_issued",
            "data": {"id": case_id},
        }
    )
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": _sign(gw.webhook_secret, webhook_id, ts, payload),
    }

    # The official SDK accepts the delivery as OpenAI's ...
    client.webhooks.verify_signature(payload, headers, secret=gw.webhook_secret)
    # ... and rejects a tampered body, as Warden must too.
    tampered = payload.replace("warning_issued", "deactivation_issued")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(tampered, headers, secret=gw.webhook_secret)
    status, body = _post_hook(gw, headers, tampered)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_webhook_signature"

    status, body = _post_hook(gw, headers, payload)
    assert status == 200, body
    assert body["queued"] is True

    deadline = time.monotonic() + 10
    while True:
        try:
            _ask(client)
        except openai.PermissionDeniedError as err:
            assert err.code == "user_suspended"
            break
        assert time.monotonic() < deadline, "the warned user was never suspended"
        time.sleep(0.05)
