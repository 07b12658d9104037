// Legacy completions through Warden with the official Node SDK, plain and streaming.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, assertCleanUpstream, assertHashId, COMPLETIONS_MODEL } from '../lib/harness.js';

describe('completions', () => {
  let gw;
  let client;
  before(async () => {
    gw = await startGateway();
    client = gw.client({ user: 'alice' });
  });
  after(async () => {
    await gw?.stop();
  });
  beforeEach(async () => {
    await gw.standin.clear();
  });

  test('plain', async () => {
    const resp = await client.completions.create({ model: COMPLETIONS_MODEL, prompt: 'Say hello', max_tokens: 20 });
    assert.equal(resp.object, 'text_completion');
    assert.equal(resp.choices.length, 1);
    assert.match(resp.choices[0].text, /Hello from the stand-in/);

    const rec = await gw.standin.only('/completions');
    assert.equal(rec.body.prompt, 'Say hello');
    assert.equal(rec.body.max_tokens, 20);
    assertHashId(rec.body.user, 'alice');
    assertCleanUpstream(rec, gw);
  });

  test('stream', async () => {
    const stream = await client.completions.create({ model: COMPLETIONS_MODEL, prompt: 'Stream hello', stream: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.length > 0);
    assert.ok(chunks.every((c) => c.object === 'text_completion'));
    assert.match(chunks.map((c) => c.choices[0]?.text ?? '').join(''), /Hello from the stand-in/);

    const rec = await gw.standin.only('/completions');
    assert.equal(rec.body.stream, true);
    assertHashId(rec.body.user, 'alice');
    assertCleanUpstream(rec, gw);
  });

  test('request ids', async () => {
    const { response, request_id } = await client.completions
      .create({ model: COMPLETIONS_MODEL, prompt: 'ids' })
      .withResponse();
    assert.ok(response.headers.get('x-warden-request-id'));
    assert.ok(response.headers.get('x-request-id'));
    assert.equal(request_id, response.headers.get('x-request-id'));
  });
});
