// End-user identity: Warden's keyed-hash safety_identifier / user on upstream calls.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startGateway, assertCleanUpstream, assertHashId, bodyText,
  CHAT_MODEL, RESPONSES_MODEL, COMPLETIONS_MODEL, EMBEDDINGS_MODEL, IMAGE_MODEL,
} from '../lib/harness.js';

describe('end-user identity', () => {
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

  const chat = (c, extra = {}) =>
    c.chat.completions.create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'who am i' }], ...extra });

  async function chatSid(user) {
    await chat(gw.client({ user }));
    return (await gw.standin.last('/chat/completions')).body.safety_identifier;
  }

  test('chat: stable per user, distinct across users, hashed', async () => {
    const a1 = assertHashId(await chatSid('alice'), 'alice');
    const a2 = assertHashId(await chatSid('alice'), 'alice');
    const b = assertHashId(await chatSid('bob'), 'bob');
    assert.equal(a1, a2, "alice's safety_identifier is not stable");
    assert.notEqual(a1, b, 'alice and bob share a safety_identifier');
    assert.ok(!a1.includes(gw.safetySecret));
    for (const rec of await gw.standin.requestsTo('/chat/completions')) assertCleanUpstream(rec, gw);
  });

  test('chat stream carries the same identifier', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    const stream = await gw.client({ user: 'alice' }).chat.completions.create({
      model: CHAT_MODEL, messages: [{ role: 'user', content: 'stream' }], stream: true,
    });
    for await (const _ of stream) { /* drain */ }
    assert.equal((await gw.standin.only('/chat/completions')).body.safety_identifier, alice);
  });

  test('responses: same identifier as chat, distinct for bob', async () => {
    const aliceChat = await chatSid('alice');
    await gw.standin.clear();
    const c = gw.client({ user: 'alice' });
    await c.responses.create({ model: RESPONSES_MODEL, input: 'who am i' });
    await c.responses.create({ model: RESPONSES_MODEL, input: 'who am i again' });
    await gw.client({ user: 'bob' }).responses.create({ model: RESPONSES_MODEL, input: 'and me' });
    const [a1, a2, b] = (await gw.standin.requestsTo('/responses')).map((r) => r.body.safety_identifier);
    assertHashId(a1, 'alice');
    assertHashId(b, 'bob');
    assert.equal(a1, a2);
    assert.equal(a1, aliceChat, "alice's identifier differs between APIs");
    assert.notEqual(a1, b);
  });

  test('responses stream carries the identifier', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    const stream = await gw.client({ user: 'alice' }).responses.create({ model: RESPONSES_MODEL, input: 's', stream: true });
    for await (const _ of stream) { /* drain */ }
    assert.equal((await gw.standin.only('/responses')).body.safety_identifier, alice);
  });

  test('client-supplied safety_identifier / user are replaced (chat)', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    await chat(gw.client({ user: 'alice' }), { safety_identifier: 'client-chosen-sid', user: 'client-chosen-user' });
    const rec = await gw.standin.only('/chat/completions');
    assert.equal(rec.body.safety_identifier, alice);
    assert.ok(rec.body.user === undefined || rec.body.user === null || rec.body.user === alice,
      `client user forwarded: ${rec.body.user}`);
    assert.ok(!bodyText(rec).includes('client-chosen-sid'));
    assert.ok(!bodyText(rec).includes('client-chosen-user'));
  });

  test('client-supplied safety_identifier / user are replaced (responses)', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    await gw.client({ user: 'alice' }).responses.create({
      model: RESPONSES_MODEL, input: 'x', safety_identifier: 'client-chosen-sid', user: 'client-chosen-user',
    });
    const rec = await gw.standin.only('/responses');
    assert.equal(rec.body.safety_identifier, alice);
    assert.ok(rec.body.user === undefined || rec.body.user === null || rec.body.user === alice);
    assert.ok(!bodyText(rec).includes('client-chosen-sid'));
    assert.ok(!bodyText(rec).includes('client-chosen-user'));
  });

  test('embeddings / completions / images get the hash as `user`', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    const c = gw.client({ user: 'alice' });
    await c.embeddings.create({ model: EMBEDDINGS_MODEL, input: 'x', user: 'client-chosen-user' });
    await c.completions.create({ model: COMPLETIONS_MODEL, prompt: 'x', user: 'client-chosen-user' });
    await c.images.generate({ model: IMAGE_MODEL, prompt: 'x', user: 'client-chosen-user' });
    for (const p of ['/embeddings', '/completions', '/images/generations']) {
      const rec = await gw.standin.only(p);
      assert.equal(rec.body.user, alice, `${p}: user=${rec.body.user}`);
      assert.ok(!bodyText(rec).includes('client-chosen-user'), p);
    }
    await gw.standin.clear();
    await gw.client({ user: 'bob' }).embeddings.create({ model: EMBEDDINGS_MODEL, input: 'x' });
    const bob = (await gw.standin.only('/embeddings')).body.user;
    assertHashId(bob, 'bob');
    assert.notEqual(bob, alice);
  });

  test('trusted service names the user in the body', async () => {
    const alice = await chatSid('alice');
    await gw.standin.clear();
    const svc = gw.client({ user: null, key: gw.trustedKey });
    const resp = await svc.chat.completions.create({
      model: CHAT_MODEL, messages: [{ role: 'user', content: 'trusted' }], user: 'carol',
    });
    assert.ok(resp.choices[0].message.content);
    const rec = await gw.standin.only('/chat/completions');
    const sid = assertHashId(rec.body.safety_identifier, 'carol');
    assert.notEqual(sid, alice);
    assert.ok(rec.body.user === undefined || rec.body.user === null || rec.body.user === sid,
      `raw user forwarded: ${rec.body.user}`);
    assert.ok(!bodyText(rec).includes('"carol"'), 'the raw end-user id reached upstream');
    assertCleanUpstream(rec, gw);

    await gw.standin.clear();
    await svc.chat.completions.create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'trusted' }], user: 'carol' });
    assert.equal((await gw.standin.only('/chat/completions')).body.safety_identifier, sid);
  });
});
