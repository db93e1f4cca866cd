// Covers GET /v1/events on a real node: a snapshot of every panel at once, a new one after a
// lifecycle change, panels a node cannot answer reported with their status, and node stop
// ending open streams.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { Hono } from 'hono';
import pino from 'pino';
import { ApiError, errorHandler, notFound } from '../../node/api/errors.ts';
import { takeSnapshot } from '../../node/api/events.ts';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

let mesh: InprocMesh;
let node: InprocNode;

beforeAll(async () => {
  mesh = await InprocMesh.start({ nodes: 1 });
  node = mesh.nodes[0]!;
  await waitFor('the rank serving', () => node.runtime.rank.rankStatus().serving, 20_000);
}, 30_000);

afterAll(async () => {
  await mesh?.stop();
});

interface Snapshot {
  atMs: number;
  panels: Record<string, { ok: boolean; status?: number; body?: Record<string, unknown> }>;
  totals: Record<string, number>;
}

/** Reads server-sent events from a response body, one parsed snapshot at a time. */
function events(response: Response): { next(): Promise<Snapshot | null>; close(): Promise<void> } {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  return {
    close: () => reader.cancel(),
    async next() {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          if (block.includes('event: snapshot') && data !== '') return JSON.parse(data) as Snapshot;
          continue;
        }
        const { value, done } = await reader.read();
        if (done) return null;
        buffer += decoder.decode(value, { stream: true });
      }
    },
  };
}

describe('/v1/events', () => {
  test('the first event is a snapshot of every panel, read through the node\'s own routes', async () => {
    const response = await fetch(`${node.httpUrl}/v1/events`);
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const stream = events(response);
    const first = (await stream.next())!;
    await stream.close();
    expect(Object.keys(first.panels).sort()).toEqual(['lifecycle', 'members', 'pipelines', 'rank', 'status', 'view']);
    expect(first.panels.view!.ok).toBe(true);
    expect(first.panels.view!.body!.epoch).toBe(node.runtime.driver.core.view()!.epoch);
    expect(first.panels.status!.body!.peerId).toBe(node.peerId);
    expect(first.panels.lifecycle!.body!.state).toBe('RUNNING');
    expect(typeof first.totals['http requests']).toBe('number');
  });

  test('a lifecycle change is pushed to an open stream', async () => {
    const response = await fetch(`${node.httpUrl}/v1/events`);
    const stream = events(response);
    expect((await stream.next())!.panels.lifecycle!.body!.state).toBe('RUNNING');
    const paused = await fetch(`${node.httpUrl}/v1/control/pause`, { method: 'POST', headers: { authorization: 'Bearer inproc-test-token' } });
    expect(paused.status).toBe(200);
    // Bounded: the stream pushes at least every second, so PAUSED shows within a few events.
    let state: unknown = 'RUNNING';
    for (let i = 0; i < 10 && state !== 'PAUSED'; i++) state = (await stream.next())?.panels.lifecycle?.body?.state;
    expect(state).toBe('PAUSED');
    await stream.close();
    expect((await fetch(`${node.httpUrl}/v1/control/unpause`, { method: 'POST', headers: { authorization: 'Bearer inproc-test-token' } })).status).toBe(200);
  });

  test('a node answers every panel; an app lacking a route reports that panel unavailable with the status', async () => {
    const snapshot = (await (await fetch(`${node.httpUrl}/v1/dashboard/snapshot`)).json()) as Snapshot;
    expect(Object.entries(snapshot.panels).filter(([, p]) => !p.ok)).toEqual([]);
    const partial = new Hono().get('/v1/status', (c) => c.json({ peerId: 'p' })).get('/v1/view', () => {
      throw new ApiError(503, 'no-view', 'no view yet');
    });
    partial.onError(errorHandler(pino({ level: 'silent' }))).notFound(notFound);
    const taken = await takeSnapshot({ get: async (path) => partial.request(path) });
    expect(taken.panels.status).toEqual({ ok: true, body: { peerId: 'p' } });
    expect(taken.panels.view).toEqual({ ok: false, status: 503, reason: 'no view yet' });
    expect(taken.panels.pipelines).toMatchObject({ ok: false, status: 404 });
  });

  test('stopping the node ends open streams instead of waiting for them', async () => {
    const response = await fetch(`${node.httpUrl}/v1/events`);
    const stream = events(response);
    expect(await stream.next()).not.toBeNull();
    const startedMs = performance.now();
    await node.runtime.stop();
    expect(performance.now() - startedMs).toBeLessThan(5_000);
    let ended = false;
    for (let i = 0; i < 5 && !ended; i++) ended = (await stream.next().catch(() => null)) === null;
    expect(ended).toBe(true);
  });
});
