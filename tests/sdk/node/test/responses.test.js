// Responses API through Warden with the official Node SDK, plain and streaming.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, replyFor, assertCleanUpstream, RESPONSES_MODEL, PASSTHROUGH_EXTRA,
} from '../lib/harness.js';

describe('responses', () => {
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
    const text = 'Tell me something nice about otters';
    const resp = await client.responses.create({ model: RESPONSES_MODEL, input: text, instructions: 'Be brief.' });
    assert.equal(resp.object, 'response');
    assert.equal(resp.status, 'completed');
    assert.equal(resp.output_text, replyFor(text));
    assert.ok(resp.usage.total_tokens > 0);

    const rec = await gw.standin.only('/responses');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.body.input, text);
    assert.equal(rec.body.instructions, 'Be brief.');
    assertCleanUpstream(rec, gw);
  });

  test('message items input', async () => {
    const text = 'item style input';
    const resp = await client.responses.create({
      model: RESPONSES_MODEL,
      input: [{ role: 'user', content: [{ type: 'input_text', text }] }],
    });
    assert.equal(resp.output_text, replyFor(text));
  });

  test('stream', async () => {
    const text = 'Stream a response please';
    const stream = await client.responses.create({ model: RESPONSES_MODEL, input: text, stream: true });
    const events = [];
    for await (const e of stream) events.push(e);
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'response.created', types.join(','));
    assert.equal(types[types.length - 1], 'response.completed', types.join(','));
    const seq = events.map((e) => e.sequence_number);
    assert.deepEqual(seq, [...seq].sort((a, b) => a - b));
    assert.equal(new Set(seq).size, seq.length);
    const deltas = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(deltas, replyFor(text));

    const rec = await gw.standin.only('/responses');
    assert.equal(rec.body.stream, true);
    assertCleanUpstream(rec, gw);
  });

  test('stream helper', async () => {
    const text = 'via the stream helper';
    const stream = client.responses.stream({ model: RESPONSES_MODEL, input: text });
    for await (const _ of stream) { /* drain */ }
    const final = await stream.finalResponse();
    assert.equal(final.output_text, replyFor(text));
  });

  test('request ids', async () => {
    const { data, response, request_id } = await client.responses
      .create({ model: RESPONSES_MODEL, input: 'ids' })
      .withResponse();
    assert.ok(response.headers.get('x-warden-request-id'));
    assert.ok(response.headers.get('x-request-id'));
    assert.equal(request_id, response.headers.get('x-request-id'));
    assert.equal(data.output_text, replyFor('ids'));
  });

  test('unknown fields pass through', async () => {
    await client.responses.create({ model: RESPONSES_MODEL, input: 'passthrough', ...PASSTHROUGH_EXTRA });
    const { body } = await gw.standin.only('/responses');
    for (const [k, v] of Object.entries(PASSTHROUGH_EXTRA)) {
      assert.ok(k in body, `${k} did not reach upstream`);
      assert.deepEqual(body[k], v, `${k} changed on the way`);
    }
  });
});
