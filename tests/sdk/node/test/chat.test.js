// Chat Completions through Warden with the official Node SDK, plain and streaming.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, replyFor, assertCleanUpstream, CHAT_MODEL, PASSTHROUGH_EXTRA,
} from '../lib/harness.js';

describe('chat completions', () => {
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
    const text = 'Hi there, what is the capital of France?';
    const messages = [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: text },
    ];
    const resp = await client.chat.completions.create({ model: CHAT_MODEL, messages });
    assert.equal(resp.object, 'chat.completion');
    assert.ok(resp.id);
    assert.equal(resp.choices.length, 1);
    assert.equal(resp.choices[0].message.role, 'assistant');
    assert.equal(resp.choices[0].message.content, replyFor(text));
    assert.equal(resp.choices[0].finish_reason, 'stop');
    assert.ok(resp.usage.total_tokens > 0);

    const rec = await gw.standin.only('/chat/completions');
    assert.equal(rec.method, 'POST');
    assert.equal(rec.body.model, CHAT_MODEL);
    assert.deepEqual(rec.body.messages, messages);
    assertCleanUpstream(rec, gw);
  });

  test('n choices', async () => {
    const resp = await client.chat.completions.create({
      model: CHAT_MODEL, messages: [{ role: 'user', content: 'two please' }], n: 2,
    });
    assert.deepEqual(resp.choices.map((c) => c.index), [0, 1]);
  });

  test('stream with usage', async () => {
    const text = 'Stream me a short greeting please';
    const stream = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: text }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.length > 0);
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'chunk ids differ within one stream');
    const content = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? '').join('');
    assert.equal(content, replyFor(text));
    const finishes = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason).map((c) => c.choices[0].finish_reason);
    assert.deepEqual(finishes, ['stop']);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.ok(last.usage && last.usage.total_tokens > 0);

    const rec = await gw.standin.only('/chat/completions');
    assert.equal(rec.body.stream, true);
    assert.deepEqual(rec.body.stream_options, { include_usage: true });
    assertCleanUpstream(rec, gw);
  });

  test('stream response headers', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'headers?' }], stream: true })
      .withResponse();
    assert.ok(response.headers.get('x-warden-request-id'), 'no x-warden-request-id on a stream');
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    assert.equal(text, replyFor('headers?'));
  });

  test('request ids', async () => {
    const { data, response, request_id } = await client.chat.completions
      .create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'ids' }] })
      .withResponse();
    const wardenId = response.headers.get('x-warden-request-id');
    const upstreamId = response.headers.get('x-request-id');
    assert.ok(wardenId, 'no x-warden-request-id');
    assert.ok(upstreamId, 'upstream x-request-id not passed through');
    assert.equal(request_id, upstreamId);
    assert.notEqual(upstreamId, wardenId, "x-request-id is Warden's own id, not upstream's");
    assert.equal(data._request_id, upstreamId);
    assert.equal(data.choices[0].message.content, replyFor('ids'));

    const again = await client.chat.completions
      .create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'ids' }] })
      .withResponse();
    assert.ok(again.response.headers.get('x-warden-request-id'));
    assert.notEqual(again.response.headers.get('x-warden-request-id'), wardenId, 'warden request ids repeat');
  });

  test('unknown fields pass through', async () => {
    await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'passthrough' }],
      temperature: 0.25,
      ...PASSTHROUGH_EXTRA,
    });
    const { body } = await gw.standin.only('/chat/completions');
    for (const [k, v] of Object.entries(PASSTHROUGH_EXTRA)) {
      assert.ok(k in body, `${k} did not reach upstream`);
      assert.deepEqual(body[k], v, `${k} changed on the way`);
    }
    assert.equal(body.temperature, 0.25);
  });

  test('unknown fields pass through on a stream', async () => {
    const stream = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'passthrough stream' }],
      stream: true,
      ...PASSTHROUGH_EXTRA,
    });
    for await (const _ of stream) { /* drain */ }
    const { body } = await gw.standin.only('/chat/completions');
    for (const [k, v] of Object.entries(PASSTHROUGH_EXTRA)) assert.deepEqual(body[k], v, k);
  });
});
