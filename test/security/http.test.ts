// HTTP hardening on a real app over a real SQLite file and a real Bun server: body-size limit (413), per-client mutation rate limit (429 with Retry-After, before the token check), tokens on mutating routes, and no stack trace in any error response, including a provoked internal error.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import pino from 'pino';
import { createApp } from '../../node/api/app.ts';
import { loadConfig } from '../../node/config.ts';
import { Runtime } from '../../node/runtime.ts';
import { TokenBuckets } from '../../node/api/limits.ts';
import { openStorage, type Storage } from '../../node/storage/database.ts';
import { tempDir } from '../node/helpers.ts';

const token = 'secret-token-of-this-test';
const info = {
  peerId: 'p',
  bootId: 'b',
  meshId: 'm',
  worldSize: 1,
  version: 'test',
  startedAtMs: 0,
  addresses: () => [],
  connectedPeers: () => [],
};

/** Text that only a stack trace or an internal message would put in a body. */
function expectNoInternals(text: string): void {
  expect(text).not.toMatch(/\bat .+:\d+:\d+|\.ts\b|node_modules|Error:|stack/i);
}

describe('HTTP limits on a served app', () => {
  const dir = tempDir();
  let storage: Storage;
  let server: ReturnType<typeof Bun.serve>;
  let url: string;

  beforeAll(() => {
    storage = openStorage(dir.path);
    const app = createApp({ info, db: storage.db, token, log: pino({ level: 'silent' }), limits: { bodyBytesMax: 1024, mutationsPerSecond: 1, mutationBurst: 3 } });
    server = Bun.serve({ hostname: '127.0.0.1', port: 0, fetch: app.fetch });
    url = `http://127.0.0.1:${server.port}`;
  });

  afterAll(async () => {
    await server.stop(true);
    storage.close();
    dir.remove();
  });

  test('a body over the limit is answered 413 with a JSON reason, with or without content-length', async () => {
    const big = 'x'.repeat(2048);
    const sized = await fetch(`${url}/v1/anything`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: big });
    expect(sized.status).toBe(413);
    expect(await sized.json()).toEqual({ error: { code: 'too-large', message: 'request body larger than 1024 bytes' } });
    // A streamed body has no content-length: the limit counts bytes as they arrive.
    const stream = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 4; i++) controller.enqueue(new TextEncoder().encode(big));
        controller.close();
      },
    });
    const streamed = await fetch(`${url}/v1/anything`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body: stream });
    expect(streamed.status).toBe(413);
  });

  test('mutations past the burst get 429 with Retry-After, before the token is even checked; reads are not limited', async () => {
    // A fresh client address would be cleaner, but every test client is 127.0.0.1: this test
    // runs after the body-limit test, which spent two of the three tokens.
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${url}/v1/nothing-here`, { method: 'POST', body: '{}' });
      statuses.push(res.status);
      if (res.status === 429) {
        retryAfter = res.headers.get('retry-after');
        const body = (await res.json()) as { error: { code: string } };
        expect(body.error.code).toBe('rate-limited');
      } else {
        await res.body?.cancel();
      }
    }
    expect(statuses.slice(0, 1)).toEqual([401]);
    expect(statuses.slice(1)).toEqual([429, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    const read = await fetch(`${url}/v1/status`);
    expect(read.status).toBe(200);
  });
});

describe('tokens and errors', () => {
  const dir = tempDir();
  let storage: Storage;
  const app = () => createApp({ info, db: storage.db, token, log: pino({ level: 'silent' }) });

  beforeAll(() => {
    storage = openStorage(dir.path);
  });
  afterAll(() => dir.remove());

  test('every mutating method needs the token; a wrong or missing one is 401 and says which', async () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
      const missing = await app().request('/v1/status', { method });
      expect(missing.status).toBe(401);
      expect(await missing.json()).toEqual({ error: { code: 'unauthorized', message: 'missing bearer token' } });
      const wrong = await app().request('/v1/status', { method, headers: { authorization: `Bearer ${token}x` } });
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toEqual({ error: { code: 'unauthorized', message: 'wrong bearer token' } });
      // The right token passes the guard (no such mutating route: 404).
      const right = await app().request('/v1/status', { method, headers: { authorization: `Bearer ${token}` } });
      expect(right.status).toBe(404);
    }
  });

  test('an internal error is answered 500 with a generic body and no stack trace', async () => {
    const a = app();
    expect((await a.request('/v1/status')).status).toBe(200);
    // Closing the database under the app makes the status route's read throw for real.
    storage.close();
    const res = await a.request('/v1/status');
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { code: 'internal', message: 'internal error' } });
    expectNoInternals(text);
  });
});

describe('TokenBuckets', () => {
  test('refills at the configured rate, keeps clients apart and bounds how many it remembers', () => {
    const buckets = new TokenBuckets(2, 2, 3);
    expect([buckets.take('a', 0), buckets.take('a', 0)]).toEqual([0, 0]);
    expect(buckets.take('a', 0)).toBe(500);
    expect(buckets.take('b', 0)).toBe(0);
    expect(buckets.take('a', 500)).toBe(0);
    expect(buckets.take('a', 500)).toBeCloseTo(500);
    for (const c of ['c', 'd', 'e']) buckets.take(c, 600);
    // 'a' was forgotten (least recently seen) and starts with a full bucket again.
    expect(buckets.take('a', 600)).toBe(0);
    expect(() => new TokenBuckets(0, 1)).toThrow(RangeError);
  });
});

describe('a running node', () => {
  test('takes its limits from its settings', async () => {
    const dir = tempDir();
    const loaded = loadConfig({
      argv: ['--data-dir', dir.path, '--http-addr', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--token', token, '--log-level', 'silent', '--http-body-bytes-max', '64', '--http-mutation-burst', '2', '--http-mutations-per-second', '0.01'],
    });
    if (loaded.kind !== 'config') throw new Error('config printed help');
    const runtime = new Runtime(loaded.config, pino({ level: 'silent' }));
    try {
      const { httpUrl } = await runtime.start();
      const post = (body: string) => fetch(`${httpUrl}/v1/rank/infer`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
      expect((await post(JSON.stringify({ input: Array.from({ length: 40 }, (_, i) => i) }))).status).toBe(413);
      expect((await post('{}')).status).toBe(400);
      const limited = await post('{}');
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(runtime.transport.guardStatus()).toEqual({ invalid: {}, fromBlocked: 0, blocks: 0, blocked: [] });
    } finally {
      await runtime.stop();
      dir.remove();
    }
  }, 30_000);
});
