// Realtime client secrets through Warden with the official Node SDK.
//
// The Node SDK's WebSocket client (openai/realtime/ws) always connects with `wss://`
// (openai 6.49.0, realtime/internal-base.js), so it needs Warden behind TLS; this suite
// runs Warden on plain HTTP, and the WebSocket path is covered by the Python SDK suite and
// crates/warden/tests/realtime.rs instead.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway } from '../lib/harness.js';

const MODEL = 'gpt-realtime';

describe('realtime client secrets', () => {
  let gw;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw?.stop();
  });

  test('minted for an identified user with a capped expiry and the safety identifier', async () => {
    const minted = await gw.client({ user: 'node-erin' }).realtime.clientSecrets.create({
      session: { type: 'realtime', model: MODEL, instructions: 'Be kind.' },
      expires_after: { anchor: 'created_at', seconds: 7200 },
    });
    assert.match(minted.value, /^ek_/);
    const sent = await gw.standin.last('/realtime/client_secrets');
    assert.equal(sent.body.expires_after.seconds, 600);
    assert.ok(sent.headers['openai-safety-identifier']);
  });

  test('refused without an end user', async () => {
    await assert.rejects(
      gw.client({ user: null, key: gw.trustedKey }).realtime.clientSecrets.create({
        session: { type: 'realtime', model: MODEL },
      }),
      (err) => err instanceof OpenAI.PermissionDeniedError && err.code === 'end_user_required',
    );
  });
});
