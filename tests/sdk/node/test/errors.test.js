// Errors reach the Node SDK as its own error classes, in OpenAI's envelope.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  startGateway, replyFor, assertErrorEnvelope, expectError, drainStream,
  CHAT_MODEL, COMPLETIONS_MODEL, RESPONSES_MODEL, EMBEDDINGS_MODEL,
} from '../lib/harness.js';

const MSG = [{ role: 'user', content: 'hello' }];

describe('errors', () => {
  let gw;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw?.stop();
  });
  beforeEach(async () => {
    await gw.standin.clear();
  });

  test('wrong key -> AuthenticationError (invalid_api_key)', async () => {
    const c = gw.client({ key: 'wk-not-a-real-key', maxRetries: 0 });
    const err = await expectError(c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }), OpenAI.AuthenticationError);
    const inner = assertErrorEnvelope(err, 401);
    assert.equal(inner.code, 'invalid_api_key');
    assert.ok(!JSON.stringify(err.error).includes('wk-not-a-real-key'), 'the rejected key is echoed back');
    assert.ok(err.headers.get('x-warden-request-id'), 'no x-warden-request-id on an error');
    assert.deepEqual(await gw.standin.requests(), [], 'a request with a bad key reached upstream');
  });

  test('upstream key is not a valid virtual key', async () => {
    const c = gw.client({ key: gw.standinKey, maxRetries: 0 });
    const err = await expectError(c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }), OpenAI.AuthenticationError);
    assertErrorEnvelope(err, 401);
    assert.deepEqual(await gw.standin.requests(), []);
  });

  test('missing X-Warden-User on a user-required key -> BadRequestError', async () => {
    const c = gw.client({ user: null, maxRetries: 0 });
    const err = await expectError(c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }), OpenAI.BadRequestError);
    assertErrorEnvelope(err, 400);
    assert.deepEqual(await gw.standin.requests(), [], 'a request without an end user reached upstream');
  });

  test('upstream 429 -> RateLimitError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(
      c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }, { headers: { 'x-standin-fault': 'status=429' } }),
      OpenAI.RateLimitError,
    );
    assertErrorEnvelope(err, 429);
    assert.ok(err.headers.get('x-warden-request-id'));
    assert.ok((await gw.standin.requestsTo('/chat/completions')).length >= 1);
  });

  test('upstream 500 -> InternalServerError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(
      c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }, { headers: { 'x-standin-fault': 'status=500' } }),
      OpenAI.InternalServerError,
    );
    assert.ok(err.status >= 500);
    assertErrorEnvelope(err, err.status);
  });

  test('upstream 400 -> BadRequestError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(
      c.chat.completions.create({ model: CHAT_MODEL, messages: MSG }, { headers: { 'x-standin-fault': 'status=400' } }),
      OpenAI.BadRequestError,
    );
    assertErrorEnvelope(err, 400);
  });

  test('SDK default retries get through a queued 500', async () => {
    const c = gw.client({ user: 'alice' });
    await gw.standin.queueFault('status=500', 1, '/v1/chat/completions');
    const t0 = Date.now();
    const resp = await c.chat.completions.create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'retry' }] });
    assert.equal(resp.choices[0].message.content, replyFor('retry'));
    assert.ok(Date.now() - t0 < 30_000);
    assert.ok((await gw.standin.requestsTo('/chat/completions')).length >= 2);
  });

  test('SDK default retries get through a queued 429', async () => {
    const c = gw.client({ user: 'alice' });
    await gw.standin.queueFault('status=429', 1, '/v1/embeddings');
    const resp = await c.embeddings.create({ model: EMBEDDINGS_MODEL, input: 'retry', encoding_format: 'float' });
    assert.equal(resp.data.length, 1);
    assert.ok((await gw.standin.requestsTo('/embeddings')).length >= 2);
  });

  test('unknown path -> NotFoundError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(c.get('/nope'), OpenAI.NotFoundError);
    assertErrorEnvelope(err, 404);
  });

  test('unknown path, raw fetch: 404 with the full envelope', async () => {
    const res = await fetch(`${gw.baseURL}/nope`, {
      headers: { authorization: `Bearer ${gw.key}`, 'x-warden-user': 'alice' },
    });
    assert.equal(res.status, 404);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const body = await res.json();
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  });

  test('wrong type in the body -> BadRequestError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(
      c.chat.completions.create({ model: CHAT_MODEL, messages: 'this should be a list' }),
      OpenAI.BadRequestError,
    );
    assertErrorEnvelope(err, 400);
  });

  test('429 before the first byte of a stream -> RateLimitError', async () => {
    const c = gw.client({ maxRetries: 0 });
    const err = await expectError(
      c.chat.completions.create({ model: CHAT_MODEL, messages: MSG, stream: true }, { headers: { 'x-standin-fault': 'status=429' } }),
      OpenAI.RateLimitError,
    );
    assertErrorEnvelope(err, 429);
  });

  test('chat stream cut by upstream raises while iterating', async () => {
    const c = gw.client({ maxRetries: 0 });
    const stream = await c.chat.completions.create(
      { model: CHAT_MODEL, messages: [{ role: 'user', content: 'a long answer that will be cut short' }], stream: true },
      { headers: { 'x-standin-fault': 'cut_after=2' } },
    );
    const { items, error, timedOut } = await drainStream(stream);
    assert.ok(!timedOut, `the cut stream hung (${items.length} chunks received)`);
    assert.ok(error, `a stream cut by upstream ended silently after ${items.length} chunks`);
    assert.ok(error instanceof Error, String(error));
  });

  test('completions stream cut by upstream raises while iterating', async () => {
    const c = gw.client({ maxRetries: 0 });
    const stream = await c.completions.create(
      { model: COMPLETIONS_MODEL, prompt: 'a long answer that will be cut short', stream: true },
      { headers: { 'x-standin-fault': 'cut_after=2' } },
    );
    const { items, error, timedOut } = await drainStream(stream);
    assert.ok(!timedOut, 'the cut stream hung');
    assert.ok(error, `a stream cut by upstream ended silently after ${items.length} chunks`);
  });

  test('responses stream cut by upstream fails', async () => {
    const c = gw.client({ maxRetries: 0 });
    const stream = await c.responses.create(
      { model: RESPONSES_MODEL, input: 'a long answer that will be cut short', stream: true },
      { headers: { 'x-standin-fault': 'cut_after=2' } },
    );
    const { items, error, timedOut } = await drainStream(stream);
    assert.ok(!timedOut, 'the cut stream hung');
    const types = items.map((e) => e.type);
    assert.ok(!types.includes('response.completed'), types.join(','));
    if (!error) {
      // A final `error` / `response.failed` event is an acceptable way to fail a Responses stream.
      assert.ok(['error', 'response.failed'].includes(types[types.length - 1]),
        `a Responses stream cut by upstream ended silently: ${types.join(',')}`);
    }
  });

  test('slow first byte still works', async () => {
    const c = gw.client({ maxRetries: 0 });
    const resp = await c.chat.completions.create(
      { model: CHAT_MODEL, messages: [{ role: 'user', content: 'slow' }] },
      { headers: { 'x-standin-fault': 'delay_ms=300' } },
    );
    assert.equal(resp.choices[0].message.content, replyFor('slow'));
  });
});
