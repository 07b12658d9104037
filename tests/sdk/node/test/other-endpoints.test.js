// Embeddings, moderations, images and models through Warden with the official Node SDK.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, assertCleanUpstream, assertHashId,
  EMBEDDINGS_MODEL, MODERATION_MODEL, IMAGE_MODEL,
} from '../lib/harness.js';

const CATEGORIES = [
  'harassment', 'harassment/threatening', 'hate', 'hate/threatening', 'illicit',
  'illicit/violent', 'self-harm', 'self-harm/intent', 'self-harm/instructions', 'sexual',
  'sexual/minors', 'violence', 'violence/graphic',
];

describe('other endpoints', () => {
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

  test('embeddings (SDK default base64 encoding)', async () => {
    const resp = await client.embeddings.create({ model: EMBEDDINGS_MODEL, input: ['first text', 'second text'] });
    assert.equal(resp.object, 'list');
    assert.deepEqual(resp.data.map((d) => d.index), [0, 1]);
    for (const d of resp.data) {
      assert.equal(d.object, 'embedding');
      assert.ok(Array.isArray(d.embedding) && d.embedding.length > 0);
      assert.ok(d.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
    }
    const rec = await gw.standin.only('/embeddings');
    assert.deepEqual(rec.body.input, ['first text', 'second text']);
    assertHashId(rec.body.user, 'alice');
    assertCleanUpstream(rec, gw);
  });

  test('embeddings float', async () => {
    const resp = await client.embeddings.create({ model: EMBEDDINGS_MODEL, input: 'one', encoding_format: 'float' });
    assert.equal(resp.data.length, 1);
    assert.ok(resp.data[0].embedding.every((x) => typeof x === 'number'));
    assert.equal((await gw.standin.only('/embeddings')).body.encoding_format, 'float');
  });

  test('moderations', async () => {
    const input = ['a perfectly friendly sentence', 'FLAG:violence test'];
    const resp = await client.moderations.create({ model: MODERATION_MODEL, input });
    assert.ok(resp.id && resp.model);
    assert.equal(resp.results.length, 2);
    const [ok, flagged] = resp.results;
    assert.equal(ok.flagged, false);
    assert.equal(flagged.flagged, true);
    for (const c of CATEGORIES) {
      assert.ok(c in flagged.categories, `category ${c} missing`);
      assert.ok(c in flagged.category_scores, `score ${c} missing`);
    }
    assert.equal(flagged.categories.violence, true);
    assert.ok(flagged.category_scores.violence > 0.5);
    const rec = await gw.standin.only('/moderations');
    assert.deepEqual(rec.body.input, input);
    assertCleanUpstream(rec, gw);
  });

  test('images.generate', async () => {
    const resp = await client.images.generate({ model: IMAGE_MODEL, prompt: 'a small red square', n: 2 });
    assert.equal(resp.data.length, 2);
    for (const img of resp.data) {
      const png = Buffer.from(img.b64_json, 'base64');
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    }
    const rec = await gw.standin.only('/images/generations');
    assert.equal(rec.body.prompt, 'a small red square');
    assert.equal(rec.body.n, 2);
    assertHashId(rec.body.user, 'alice');
    assertCleanUpstream(rec, gw);
  });

  test('models.list and models.retrieve', async () => {
    const models = [];
    for await (const m of client.models.list()) models.push(m);
    assert.ok(models.length > 0, 'empty model list');
    for (const m of models) {
      assert.equal(m.object, 'model');
      assert.ok(typeof m.id === 'string' && m.id);
    }
    const got = await client.models.retrieve(models[0].id);
    assert.equal(got.id, models[0].id);
    assert.equal(got.object, 'model');
    const listed = await gw.standin.requestsTo('/models');
    const retrieved = await gw.standin.requestsTo(`/models/${models[0].id}`);
    assert.ok(listed.length >= 1 && retrieved.length === 1);
    for (const rec of [...listed, ...retrieved]) {
      assert.equal(rec.method, 'GET');
      assertCleanUpstream(rec, gw);
    }
  });

  test('request ids on every endpoint', async () => {
    const calls = {
      embeddings: () => client.embeddings.create({ model: EMBEDDINGS_MODEL, input: 'ids' }),
      moderations: () => client.moderations.create({ input: 'ids' }),
      images: () => client.images.generate({ model: IMAGE_MODEL, prompt: 'ids' }),
      models: () => client.models.list(),
    };
    for (const [name, call] of Object.entries(calls)) {
      const { response, request_id } = await call().withResponse();
      assert.ok(response.headers.get('x-warden-request-id'), `${name}: no x-warden-request-id`);
      assert.ok(response.headers.get('x-request-id'), `${name}: no upstream x-request-id`);
      assert.equal(request_id, response.headers.get('x-request-id'), name);
    }
  });
});
