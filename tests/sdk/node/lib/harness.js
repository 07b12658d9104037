// Shared harness for the Node SDK suite.
//
// startGateway() starts the stand-in upstream and Warden (binaries from
// $WARDEN_BIN_DIR, default `target/debug` relative to the repo root), writes
// Warden's config pointing at the stand-in, waits for both "listening on"
// lines, and returns URLs, keys, a stand-in control client and an SDK client
// factory. gw.stop() ends both processes; they are also killed when this node
// process exits for any reason (test failure, uncaught error, signal).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, closeSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..', '..');
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;

export const CHAT_MODEL = 'gpt-4o-mini';
export const RESPONSES_MODEL = 'gpt-4.1-mini';
export const COMPLETIONS_MODEL = 'gpt-3.5-turbo-instruct';
export const EMBEDDINGS_MODEL = 'text-embedding-3-small';
export const MODERATION_MODEL = 'omni-moderation-latest';
export const IMAGE_MODEL = 'gpt-image-1';
export const REPLY_PREFIX = 'Hello from the stand-in. You said: ';

/** Unknown / newer request fields Warden must pass through untouched. */
export const PASSTHROUGH_EXTRA = Object.freeze({
  prompt_cache_key: 'k1',
  moderation: { model: 'omni-moderation-latest', policy: { input: { mode: 'score' } } },
  service_tier: 'flex',
  metadata: { a: 'b' },
});

/** The stand-in's deterministic answer to a last user text. */
export function replyFor(text) {
  return REPLY_PREFIX + [...text].slice(0, 40).join('');
}

export function binDir() {
  const raw = process.env.WARDEN_BIN_DIR || 'target/debug';
  return path.isAbsolute(raw) ? raw : path.resolve(REPO_ROOT, raw);
}

const STANDIN_LINE = /standin listening on (http:\/\/127\.0\.0\.1:\d+)/;
const WARDEN_LINE = /warden listening on (http:\/\/127\.0\.0\.1:\d+) \(admin (http:\/\/127\.0\.0\.1:\d+)\)/;

// Every child we start, so that they die with us whatever happens.
const live = new Set();
function killAllSync() {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}
process.once('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAllSync();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

class Proc {
  constructor(name, argv, env, logPath) {
    this.name = name;
    this.argv = argv;
    this.logPath = logPath;
    this.logFd = openSync(logPath, 'w');
    this.child = spawn(argv[0], argv.slice(1), {
      env,
      stdio: ['ignore', 'pipe', this.logFd],
    });
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this.child);
        resolve({ code, signal });
      });
      this.child.once('error', (err) => {
        live.delete(this.child);
        resolve({ code: null, signal: null, error: err });
      });
    });
    this.lines = [];
    this.waiters = [];
    const rl = createInterface({ input: this.child.stdout });
    rl.on('line', (line) => {
      this.lines.push(line);
      try {
        writeFileSync(this.logPath, `[stdout] ${line}\n`, { flag: 'a' });
      } catch {
        // log is best effort
      }
      for (const w of this.waiters) w();
    });
  }

  waitFor(regex, timeoutMs = START_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        for (const line of this.lines) {
          const m = regex.exec(line);
          if (m) {
            cleanup();
            resolve(m);
            return true;
          }
        }
        return false;
      };
      const fail = (why) => {
        cleanup();
        reject(new Error(`${this.name} ${why}; argv=${JSON.stringify(this.argv)}\n--- log ${this.logPath} ---\n${this.logTail()}`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      if (check()) return;
      this.waiters.push(check);
      timer = setTimeout(() => fail(`did not announce readiness within ${timeoutMs} ms`), timeoutMs);
      this.exited.then((st) => {
        if (!check()) fail(`exited before announcing readiness (${JSON.stringify(st)})`);
      });
    });
  }

  logTail(n = 60) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      let timer;
      const t = new Promise((r) => {
        timer = setTimeout(() => r('timeout'), STOP_TIMEOUT_MS);
      });
      const outcome = await Promise.race([this.exited, t]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    try {
      closeSync(this.logFd);
    } catch {
      // already closed
    }
  }
}

async function http(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let json = text;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON
  }
  return { status: res.status, body: json, headers: res.headers };
}

/** Client for the stand-in's control API (not under /v1). */
export class Standin {
  constructor(url) {
    this.url = url;
  }

  async requests() {
    const r = await http('GET', `${this.url}/_standin/requests`);
    assert.equal(r.status, 200, `GET /_standin/requests -> ${r.status} ${JSON.stringify(r.body)}`);
    assert.ok(Array.isArray(r.body), `recorded requests not an array: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async clear() {
    const r = await http('DELETE', `${this.url}/_standin/requests`);
    assert.ok(r.status === 200 || r.status === 204, `DELETE /_standin/requests -> ${r.status}`);
  }

  /** Queue `fault` for the next `count` /v1 calls (only those under `path`, if given). */
  async queueFault(fault, count = 1, path = undefined) {
    const req = { fault, count };
    if (path !== undefined) req.path = path;
    const r = await http('POST', `${this.url}/_standin/faults`, req);
    assert.ok(r.status >= 200 && r.status < 300, `POST /_standin/faults -> ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** A recorded request's path without query, relative to /v1. */
  static apiPath(rec) {
    const p = String(rec.path ?? '').split('?')[0];
    return p.startsWith('/v1/') ? p.slice(3) : p;
  }

  async requestsTo(apiPath) {
    return (await this.requests()).filter((r) => Standin.apiPath(r) === apiPath);
  }

  async last(apiPath) {
    const all = await this.requests();
    const reqs = all.filter((r) => Standin.apiPath(r) === apiPath);
    assert.ok(reqs.length > 0, `no upstream request to ${apiPath}; recorded: ${JSON.stringify(all.map((r) => r.path))}`);
    return reqs[reqs.length - 1];
  }

  async only(apiPath) {
    const all = await this.requests();
    const reqs = all.filter((r) => Standin.apiPath(r) === apiPath);
    assert.equal(reqs.length, 1, `expected one upstream request to ${apiPath}; recorded: ${JSON.stringify(all.map((r) => r.path))}`);
    return reqs[0];
  }
}

function configToml(standinUrl, dbPath) {
  return `[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body_bytes = 1048576

[upstream]
base_url = "${standinUrl}/v1"
api_key_env = "WARDEN_TEST_UPSTREAM_KEY"

[storage]
url = "sqlite://${dbPath}"

[identity]
safety_identifier_secret_env = "WARDEN_TEST_SAFETY_SECRET"

[[keys]]
name = "sdk-app"
secret_env = "WARDEN_TEST_KEY"
end_user = "required"

[[keys]]
name = "trusted-svc"
secret_env = "WARDEN_TEST_KEY_TRUSTED"
end_user = "optional"
trusted_user_field = true
`;
}

const hex = (n) => randomBytes(n).toString('hex');

export async function startGateway() {
  const bins = binDir();
  const standinBin = path.join(bins, 'standin');
  const wardenBin = path.join(bins, 'warden');
  const missing = [standinBin, wardenBin].filter((b) => !existsSync(b));
  if (missing.length) {
    throw new Error(`binaries not found: ${missing.join(', ')} (set WARDEN_BIN_DIR or run cargo build first)`);
  }

  const dir = mkdtempSync(path.join(tmpdir(), 'warden-sdk-node-'));
  const standinKey = `sk-standin-${hex(12)}`;
  const key = `wk-sdk-app-${hex(16)}`;
  const trustedKey = `wk-trusted-${hex(16)}`;
  const safetySecret = hex(32);
  const baseEnv = { ...process.env, RUST_BACKTRACE: process.env.RUST_BACKTRACE ?? '1' };
  delete baseEnv.OPENAI_API_KEY;

  const procs = {};
  let stopped = false;
  const stop = async ({ keepLogs = false } = {}) => {
    if (stopped) return;
    stopped = true;
    for (const name of ['warden', 'standin']) {
      if (procs[name]) await procs[name].stop();
    }
    if (keepLogs || process.env.WARDEN_SDK_KEEP_TMP === '1') {
      process.stderr.write(`[sdk-tests] process logs kept in ${dir}\n`);
    } else {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  try {
    procs.standin = new Proc(
      'standin',
      [standinBin, '--listen', '127.0.0.1:0', '--api-key', standinKey],
      baseEnv,
      path.join(dir, 'standin.log'),
    );
    const standinUrl = (await procs.standin.waitFor(STANDIN_LINE))[1];

    const cfg = path.join(dir, 'warden.toml');
    writeFileSync(cfg, configToml(standinUrl, path.join(dir, 'warden.db')));
    procs.warden = new Proc(
      'warden',
      [wardenBin, 'serve', '--config', cfg],
      {
        ...baseEnv,
        WARDEN_TEST_UPSTREAM_KEY: standinKey,
        WARDEN_TEST_SAFETY_SECRET: safetySecret,
        WARDEN_TEST_KEY: key,
        WARDEN_TEST_KEY_TRUSTED: trustedKey,
      },
      path.join(dir, 'warden.log'),
    );
    const m = await procs.warden.waitFor(WARDEN_LINE);
    const wardenUrl = m[1];

    const gw = {
      wardenUrl,
      adminUrl: m[2],
      baseURL: `${wardenUrl}/v1`,
      standinUrl,
      standinKey,
      key,
      trustedKey,
      safetySecret,
      dir,
      standin: new Standin(standinUrl),
      stop,
      logTails: () => Object.entries(procs).map(([n, p]) => `--- ${n} ---\n${p.logTail(30)}`).join('\n'),
      /**
       * An SDK client pointed at Warden. `user` goes into X-Warden-User (null: no header);
       * `key` defaults to the sdk-app virtual key; the rest goes to the constructor.
       */
      client({ user = 'alice', key: k = key, defaultHeaders = {}, ...rest } = {}) {
        const headers = { ...defaultHeaders };
        if (user !== null) headers['X-Warden-User'] = user;
        return new OpenAI({ apiKey: k, baseURL: gw.baseURL, defaultHeaders: headers, timeout: 30_000, ...rest });
      },
    };
    return gw;
  } catch (err) {
    await stop({ keepLogs: true });
    throw err;
  }
}

// ---- assertions shared by the test files ----

/** The SDK error carries OpenAI's envelope with all four keys; returns the inner object. */
export function assertErrorEnvelope(err, status) {
  assert.ok(err instanceof OpenAI.APIError, `not an SDK APIError: ${err}`);
  assert.equal(err.status, status, `status ${err.status} != ${status}: ${err.message}`);
  const inner = err.error;
  assert.ok(inner && typeof inner === 'object', `no {"error": {...}} envelope in the body (got ${JSON.stringify(inner)})`);
  for (const k of ['message', 'type', 'param', 'code']) {
    assert.ok(k in inner, `error envelope lacks ${k}: ${JSON.stringify(inner)}`);
  }
  assert.equal(typeof inner.message, 'string');
  assert.ok(inner.message.length > 0);
  assert.equal(typeof inner.type, 'string');
  assert.ok(inner.param === null || typeof inner.param === 'string', JSON.stringify(inner));
  assert.ok(inner.code === null || typeof inner.code === 'string', JSON.stringify(inner));
  assert.equal(err.code, inner.code);
  assert.equal(err.type, inner.type);
  return inner;
}

/** The raw body the stand-in received (falls back to re-serialising `body`). */
export function bodyText(rec) {
  return typeof rec.body_text === 'string' ? rec.body_text : JSON.stringify(rec.body);
}

/** The upstream call used Warden's upstream key and leaked nothing client-side. */
export function assertCleanUpstream(rec, gw) {
  const headers = Object.fromEntries(Object.entries(rec.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  assert.equal(headers.authorization, `Bearer ${gw.standinKey}`, 'upstream authorization is not Warden\'s upstream key');
  assert.ok(!('x-warden-user' in headers), `x-warden-user reached upstream: ${JSON.stringify(headers)}`);
  const blob = JSON.stringify(headers) + bodyText(rec);
  for (const [secret, what] of [
    [gw.key, 'sdk-app virtual key'],
    [gw.trustedKey, 'trusted-svc virtual key'],
    [gw.safetySecret, 'safety identifier secret'],
  ]) {
    assert.ok(!blob.includes(secret), `the ${what} reached upstream`);
  }
}

/** A hashed end-user id: a non-empty string of at most 64 chars hiding the raw ids. */
export function assertHashId(value, ...rawIds) {
  assert.equal(typeof value, 'string', `expected a hashed end-user id, got ${JSON.stringify(value)}`);
  assert.ok(value.length > 0 && value.length <= 64, `bad identifier length: ${JSON.stringify(value)}`);
  for (const raw of rawIds) {
    assert.ok(!value.toLowerCase().includes(raw.toLowerCase()), `identifier ${value} contains ${raw}`);
  }
  return value;
}

/** Expect `promise` to reject with an SDK error of class `cls`; returns the error. */
export async function expectError(promise, cls) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.message}`);
    return err;
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`);
}

/**
 * Iterate an SDK stream with a deadline. Returns { items, error, timedOut }:
 * the error the SDK raised while iterating (or null), and whether the deadline hit.
 */
export async function drainStream(stream, deadlineMs = 15_000) {
  const items = [];
  let timer;
  const deadline = new Promise((resolve) => {
    timer = setTimeout(() => resolve('deadline'), deadlineMs);
  });
  const run = (async () => {
    try {
      for await (const item of stream) items.push(item);
      return null;
    } catch (err) {
      return err ?? new Error('stream threw a nullish value');
    }
  })();
  const outcome = await Promise.race([run, deadline]);
  clearTimeout(timer);
  if (outcome === 'deadline') {
    stream.controller?.abort();
    return { items, error: null, timedOut: true };
  }
  return { items, error: outcome, timedOut: false };
}
