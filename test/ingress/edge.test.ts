// Covers POST /v1/generate and GET /v1/requests/:id on a rank and a gateway: bad input is refused with a clear 4xx and nothing stored, idempotency keys name one request, a rank runs a forwarded id once, async requests are followed by GET, a full rank queue answers 429 and a full hold 503 with Retry-After, requests sent while PAUSED wait and run after UNPAUSE — also across a restart of their ingress node — and STOP fails the waiting ones with status stopped.
import { Database } from 'bun:sqlite';
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { join } from 'node:path';
import { decodeForwardReplies, encodeForwardBatch, FORWARD_REQUEST, forwardRequestJson } from '../../node/ingress/wire.ts';
import { waitFor } from '../node/helpers.ts';
import { fullyServing, generate, getRequest, inputOf, singleRankOutputs, TestCluster, type TestNode, token } from './helpers.ts';

let cluster: TestCluster;
let rank: TestNode;
let gateway: TestNode;

/** Rows of the node's ingress table, read through a second connection (WAL allows it). */
function storedRows(node: TestNode): number {
  const db = new Database(join(node.dataDir, 'node.sqlite'), { readonly: true });
  try {
    return (db.query('SELECT count(*) AS n FROM ingress_requests').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

async function control(node: TestNode, command: string): Promise<number> {
  const res = await fetch(`${node.httpUrl}/v1/control/${command}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
  await res.body?.cancel();
  return res.status;
}

const lifecycleOf = (node: TestNode) => node.runtime.driver.core.lifecycleState();

describe('edge routes', () => {
  beforeAll(async () => {
    cluster = await TestCluster.start(['rank', 'gateway'], 1, {
      pipelines: ['default', 'chat'],
      ingressInputTokensMax: 64,
      ingressHeldMax: 8,
      ingressRankQueueCapacity: 2,
      ingressRankConcurrency: 1,
      controlTimeoutMs: 20_000,
    });
    [rank, gateway] = cluster.nodes as [TestNode, TestNode];
    await waitFor('the rank serving and the gateway following its view', () => fullyServing(cluster, 1), 20_000);
  }, 30_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  test('a sync request is answered with the single-rank output by the rank node and by the gateway', async () => {
    const [want] = await singleRankOutputs([inputOf(3)]);
    for (const node of [rank, gateway]) {
      const answer = await generate(node.httpUrl, { input: inputOf(3) });
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({ status: 'done', output: want, rank: 0, pipeline: 'default', mode: 'sync', attempts: 1 });
      expect((await getRequest(node.httpUrl, answer.body.id)).body).toEqual(answer.body);
    }
  });

  test('bad input gets a clear 4xx and nothing is stored', async () => {
    const before = [storedRows(rank), storedRows(gateway)];
    const cases: [unknown, number, string, string][] = [
      [undefined, 400, 'bad-request', 'must be JSON'],
      [{ input: 'abc' }, 400, 'bad-request', 'input'],
      [{ input: [1], extra: 1 }, 400, 'bad-request', 'extra'],
      [{ input: [] }, 400, 'bad-request', 'non-empty'],
      [{ input: [1, 2.5] }, 400, 'bad-request', 'input[1]'],
      [{ input: [1, 256] }, 400, 'bad-request', '0..255'],
      [{ input: [1], mode: 'later' }, 400, 'bad-request', 'mode'],
      [{ input: [1], pipeline: 'nope' }, 404, 'unknown-pipeline', 'default, chat'],
      [{ input: [1], idempotencyKey: 'has space' }, 400, 'bad-request', 'idempotencyKey'],
      [{ input: [1], idempotencyKey: 'k'.repeat(129) }, 400, 'bad-request', 'idempotencyKey'],
      [{ input: Array.from({ length: 65 }, () => 1) }, 413, 'too-large', 'limit is 64'],
      [{ input: Array.from({ length: 5000 }, () => 1) }, 413, 'too-large', 'larger than'],
    ];
    for (const node of [rank, gateway]) {
      for (const [body, status, code, text] of cases) {
        const answer = await generate(node.httpUrl, body, body === undefined ? '{"input": [1' : undefined);
        expect([JSON.stringify(body)?.slice(0, 40), answer.status]).toEqual([JSON.stringify(body)?.slice(0, 40), status]);
        const error = (answer.body as unknown as { error: { code: string; message: string } }).error;
        expect(error.code).toBe(code);
        expect(error.message).toContain(text);
      }
      const unauthorized = await fetch(`${node.httpUrl}/v1/generate`, { method: 'POST', body: JSON.stringify({ input: [1] }) });
      expect(unauthorized.status).toBe(401);
    }
    expect([storedRows(rank), storedRows(gateway)]).toEqual(before);
    expect((await getRequest(gateway.httpUrl, 'no-such-id')).status).toBe(404);
  });

  test('an idempotency key names one request; reused with another input it is a 409', async () => {
    const first = await generate(gateway.httpUrl, { input: [7, 8, 9], pipeline: 'chat', idempotencyKey: 'same-key' });
    expect(first.status).toBe(200);
    const rows = storedRows(gateway);
    const again = await generate(gateway.httpUrl, { input: [7, 8, 9], pipeline: 'chat', idempotencyKey: 'same-key', mode: 'async' });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    const conflict = await generate(gateway.httpUrl, { input: [7, 8], pipeline: 'chat', idempotencyKey: 'same-key' });
    expect(conflict.status).toBe(409);
    expect((conflict.body as unknown as { error: { code: string } }).error.code).toBe('idempotency-conflict');
    expect(storedRows(gateway)).toBe(rows);
  });

  test('an async request answers 202 with its id, and GET follows it to its result', async () => {
    const res = await fetch(`${gateway.httpUrl}/v1/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input: inputOf(11), mode: 'async' }),
    });
    const body = (await res.json()) as { id: string; status: string };
    expect(res.status).toBe(202);
    expect(['queued', 'running']).toContain(body.status);
    expect(res.headers.get('location')).toBe(`/v1/requests/${body.id}`);
    const [want] = await singleRankOutputs([inputOf(11)]);
    await waitFor('the async request done', async () => (await getRequest(gateway.httpUrl, body.id)).body.status === 'done', 10_000);
    expect((await getRequest(gateway.httpUrl, body.id)).body).toMatchObject({ status: 'done', output: want, rank: 0 });
  });

  test('when the rank queue here is full, new requests get 429 with Retry-After and nothing stored; the accepted ones complete', async () => {
    const rows = storedRows(gateway);
    const answers = await Promise.all(Array.from({ length: 24 }, (_, i) => generate(gateway.httpUrl, { input: inputOf(100 + i), mode: 'async' })));
    const busy = answers.filter((a) => a.status === 429);
    const accepted = answers.filter((a) => a.status === 202 || a.status === 200);
    expect(busy.length).toBeGreaterThan(0);
    expect(busy.length + accepted.length).toBe(24);
    for (const a of busy) {
      expect(a.retryAfter).toBe('1');
      expect((a.body as unknown as { error: { code: string; message: string } }).error.message).toContain('limit');
    }
    expect(storedRows(gateway)).toBe(rows + accepted.length);
    await waitFor('every accepted request done', async () => (await Promise.all(accepted.map((a) => getRequest(gateway.httpUrl, a.body.id)))).every((g) => g.body.status === 'done'), 10_000);
  });

  test('a rank runs a request id once however often it is forwarded, and answers a malformed forward with an error', async () => {
    const before = rank.runtime.rank.rankStatus().requests.accepted;
    const request = forwardRequestJson({ id: 'dedupe-1', pipeline: 'default', input: inputOf(21) });
    const send = (b: Uint8Array) => gateway.runtime.transport.request(rank.peerId, FORWARD_REQUEST, b);
    const replies = async (b: Uint8Array) => {
      const result = await send(b);
      if (!result.ok) throw new Error(result.message);
      return decodeForwardReplies(result.bytes);
    };
    // Twice at once, then twice in one batch: one run.
    const [a, b] = await Promise.all([replies(encodeForwardBatch([request])), replies(encodeForwardBatch([request]))]);
    const c = await replies(encodeForwardBatch([request, request]));
    const [want] = await singleRankOutputs([inputOf(21)]);
    const done = { kind: 'done', id: 'dedupe-1', output: [...want!], rank: 0, epoch: cluster.view(rank)!.epoch };
    expect([a, b, c] as unknown).toEqual([[done], [done], [done, done]]);
    expect(rank.runtime.rank.rankStatus().requests.accepted).toBe(before + 1);
    const bad = await send(new TextEncoder().encode('{"v":1,"requests":[{"id":"x"}]}'));
    expect(bad).toMatchObject({ ok: false, error: 'remote-error' });
    expect(bad.ok ? '' : bad.message).toContain('malformed forward');
    expect(rank.runtime.rank.rankStatus().requests.accepted).toBe(before + 1);
  });

  test('requests sent while PAUSED wait (503 past the hold), survive a restart of their ingress node, and run after UNPAUSE', async () => {
    expect(await control(rank, 'pause')).toBe(200);
    await waitFor('the gateway sees PAUSED', () => lifecycleOf(gateway) === 'PAUSED', 10_000);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const answer = await generate(gateway.httpUrl, { input: inputOf(200 + i), mode: 'async' });
      expect(answer.status).toBe(202);
      expect(answer.body.status).toBe('queued');
      ids.push(answer.body.id);
    }
    const full = await generate(gateway.httpUrl, { input: inputOf(300), mode: 'async' });
    expect(full.status).toBe(503);
    expect(full.retryAfter).toBe('1');
    expect(gateway.runtime.ingress.load()).toEqual({ held: 8, queued: 0, inflight: 0 });

    // The ingress node restarts with all eight outstanding: they were stored, and it takes them up.
    await cluster.kill(gateway);
    await cluster.launch(gateway);
    await waitFor('the restarted gateway following the paused view', () => cluster.view(gateway) !== null && lifecycleOf(gateway) === 'PAUSED', 10_000);
    expect(gateway.runtime.ingress.load().held).toBe(8);
    for (const id of ids) expect((await getRequest(gateway.httpUrl, id)).body.status).toBe('queued');

    expect(await control(rank, 'unpause')).toBe(200);
    const want = await singleRankOutputs(ids.map((_, i) => inputOf(200 + i)));
    await waitFor('the held requests done after UNPAUSE', async () => (await Promise.all(ids.map((id) => getRequest(gateway.httpUrl, id)))).every((g) => g.body.status === 'done'), 15_000);
    for (const [i, id] of ids.entries()) expect((await getRequest(gateway.httpUrl, id)).body.output).toEqual(want[i]!);
  }, 40_000);

  test('STOP fails the requests waiting in the queue with status stopped, and new ones get 503', async () => {
    expect(await control(gateway, 'pause')).toBe(200);
    await waitFor('the gateway sees PAUSED', () => lifecycleOf(gateway) === 'PAUSED', 10_000);
    const waiting = await Promise.all([1, 2, 3].map((i) => generate(gateway.httpUrl, { input: inputOf(400 + i), mode: 'async' })));
    for (const w of waiting) expect(w.body.status).toBe('queued');
    const sync = generate(gateway.httpUrl, { input: inputOf(404) });
    const stop = fetch(`${rank.httpUrl}/v1/control/stop`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{}' }).catch(() => null);
    const answered = await sync;
    expect(answered.status).toBe(503);
    expect(answered.body).toMatchObject({ status: 'failed', error: { code: 'stopped' } });
    for (const w of waiting) {
      const got = await getRequest(gateway.httpUrl, w.body.id);
      expect(got.body).toMatchObject({ status: 'failed', error: { code: 'stopped' } });
      expect(got.body.error?.message).toContain('stop');
    }
    const refused = await generate(gateway.httpUrl, { input: [1] });
    expect(refused.status).toBe(503);
    expect(refused.retryAfter).toBeNull();
    await stop;
  }, 40_000);
});
