// Covers the HTTP API through app.request(...) against a real SQLite file in a temp dir:
// /healthz, /v1/status, the bearer-token guard on mutating routes, and JSON errors.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import pino from 'pino';
import { createApp } from '../../node/api/app.ts';
import type { NodeInfo, StatusBody } from '../../node/api/status.ts';
import { openStorage, type Storage } from '../../node/storage/database.ts';
import { recordStart } from '../../node/storage/meta.ts';
import { tempDir } from './helpers.ts';

const token = 'test-token-0123456789';
const dir = tempDir();
let storage: Storage;
let app: ReturnType<typeof createApp>;
const info: NodeInfo = {
  peerId: '12D3KooWTestPeer',
  bootId: 'boot-2',
  meshId: 'http-test',
  worldSize: 3,
  version: '0.1.0',
  startedAtMs: Date.now() - 1500,
  addresses: () => ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWTestPeer'],
  connectedPeers: () => ['12D3KooWOther'],
};

beforeAll(() => {
  storage = openStorage(dir.path);
  recordStart(storage.db, info.peerId, 'boot-1', Date.now());
  recordStart(storage.db, info.peerId, info.bootId, Date.now());
  app = createApp({ info, db: storage.db, token, log: pino({ level: 'silent' }) });
});

afterAll(() => {
  storage.close();
  dir.remove();
});

describe('HTTP API', () => {
  test('GET /healthz answers ok', async () => {
    const response = await app.request('/healthz');
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ok: true });
  });

  test('GET /v1/status reports identity, addresses, peers, uptime and the starts stored in SQLite', async () => {
    const response = await app.request('/v1/status');
    expect(response.status).toBe(200);
    const body = (await response.json()) as StatusBody;
    expect(body).toMatchObject({
      peerId: info.peerId,
      bootId: 'boot-2',
      meshId: 'http-test',
      worldSize: 3,
      version: '0.1.0',
      starts: 2,
      addresses: ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWTestPeer'],
      connectedPeers: ['12D3KooWOther'],
    });
    expect(body.uptimeMs).toBeGreaterThanOrEqual(1500);
  });

  test('a mutating request without the bearer token is refused before any route runs', async () => {
    const missing = await app.request('/v1/status', { method: 'POST' });
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: { code: 'unauthorized', message: 'missing bearer token' } });
    const wrong = await app.request('/v1/status', { method: 'DELETE', headers: { authorization: `Bearer ${token}x` } });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: { message: string } }).error.message).toBe('wrong bearer token');
  });

  test('with the right token a mutating request passes the guard and reaches routing', async () => {
    const response = await app.request('/v1/status', { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({ error: { code: 'not-found', message: 'no route POST /v1/status' } });
  });

  test('an unknown path gives a JSON 404', async () => {
    const response = await app.request('/v2/nothing');
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('not-found');
  });
});
