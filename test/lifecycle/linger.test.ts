// Covers STOP across a partition with real nodes in one process (libp2p, the core, the rank side; links cut by the transport's block hook): the closed majority lingers past closedGraceMs while a cut-off rank has not learned the close, the healed rank learns it and both sides leave with every peer acknowledged — the majority only after the healed rank closed — and without a heal the majority leaves at closeLingerMs; plus the linger rule as a table.
import { afterEach, describe, expect, test } from 'bun:test';
import { InprocMesh, type InprocNode, activeMembers } from '../../scripts/lib/inproc-mesh.ts';
import { validate } from '../../node/config.ts';
import { type LingerSettings, lingerDecision } from '../../node/lifecycle/linger.ts';
import { lingerSettings } from '../../node/runtime.ts';
import type { CloseBody } from '../../node/lifecycle/routes.ts';
import { waitFor } from '../node/helpers.ts';

describe('the linger rule', () => {
  const settings: LingerSettings = { graceMs: 2000, lingerMaxMs: 60_000, settleMs: 600 };
  test.each([
    // sinceClose, sinceLastAck, waitingFor → decision
    [0, 0, 0, { exit: false }],
    [1999, 1999, 0, { exit: false }],
    [2000, 2000, 0, { exit: true, reason: 'acknowledged' }],
    [2000, 599, 0, { exit: false }],
    [2000, 600, 0, { exit: true, reason: 'acknowledged' }],
    [30_000, 30_000, 1, { exit: false }],
    [59_999, 59_999, 2, { exit: false }],
    [60_000, 60_000, 2, { exit: true, reason: 'bound' }],
    [60_000, 0, 0, { exit: true, reason: 'bound' }],
  ] as const)('%d ms after the close, %d ms after the last ack, %d waited for', (sinceClose, sinceAck, waiting, expected) => {
    expect(lingerDecision(settings, sinceClose, sinceAck, waiting)).toEqual(expected);
  });

  test('the node settles two heartbeat intervals after the last acknowledgement, the automatic interval too', () => {
    expect(lingerSettings(validate({ heartbeatIntervalMs: 150 }))).toEqual({ graceMs: 2000, lingerMaxMs: 180_000, settleMs: 300 });
    expect(lingerSettings(validate({ worldSize: 4 })).settleMs).toBe(600);
    // Above 8 ranks the automatic interval grows (4.8 s at 32 ranks), but a closed node
    // heartbeats at least every 600 ms, so the settle stays 1.2 s.
    expect(lingerSettings(validate({ worldSize: 32 })).settleMs).toBe(1200);
    expect(lingerSettings(validate({ worldSize: 64, closedGraceMs: 0, closeLingerMs: 10 }))).toEqual({ graceMs: 0, lingerMaxMs: 10, settleMs: 1200 });
  });

  test('closedGraceMs is the least linger even when closeLingerMs is shorter', () => {
    const short: LingerSettings = { graceMs: 2000, lingerMaxMs: 500, settleMs: 0 };
    expect(lingerDecision(short, 1000, 1000, 3)).toEqual({ exit: false });
    expect(lingerDecision(short, 2000, 2000, 3)).toEqual({ exit: true, reason: 'bound' });
  });
});

const meshes: InprocMesh[] = [];
afterEach(async () => {
  await Promise.all(meshes.splice(0).map((m) => m.stop()));
});

const graceMs = 500;
const fast = { heartbeatIntervalMs: 150, suspectMs: 600, probeTimeoutMs: 500, closedGraceMs: graceMs };

async function control(node: InprocNode, command: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${node.httpUrl}/v1/control/${command}`, { method: 'POST', headers: { authorization: 'Bearer inproc-test-token' } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function closeOf(node: InprocNode): Promise<CloseBody> {
  return (await (await fetch(`${node.httpUrl}/v1/lifecycle/close`)).json()) as CloseBody;
}

/** Three serving ranks; the third cut off and removed by the other two, which then PAUSE and STOP. */
async function stopWithOneCutOff(closeLingerMs: number): Promise<{ mesh: InprocMesh; majority: InprocNode[]; cut: InprocNode }> {
  const mesh = await InprocMesh.start({ nodes: 3, settings: { ...fast, closeLingerMs } });
  meshes.push(mesh);
  await waitFor('3 ranks serving', () => mesh.nodes.every((n) => n.runtime.rank.rankStatus().serving), 30_000);
  const [a, b, cut] = mesh.nodes as [InprocNode, InprocNode, InprocNode];
  await mesh.partition([cut], [a, b]);
  await waitFor('the two to commit a view without the third', () => [a, b].every((n) => !activeMembers(mesh.view(n)).includes(cut.peerId)), 45_000);
  expect((await control(a, 'pause')).body).toMatchObject({ state: 'PAUSED' });
  expect((await control(b, 'stop')).body).toMatchObject({ state: 'STOPPED' });
  return { mesh, majority: [a, b], cut };
}

test('a rank cut off across STOP learns the close once healed; the majority waits for it past the grace period, then all leave acknowledged', async () => {
  const { mesh, majority, cut } = await stopWithOneCutOff(60_000);
  const left = new Map<InprocNode, { atMs: number; why: string }>();
  for (const n of mesh.nodes) void n.runtime.closeLinger.done.then((why) => left.set(n, { atMs: performance.now(), why }));
  let cutClosedAtMs = Number.POSITIVE_INFINITY;
  void cut.runtime.meshClosed.then(() => (cutClosedAtMs = performance.now()));

  // Well past the grace period the majority is still there, naming whom it waits for.
  await waitFor('the majority closed for twice the grace period', async () => (await Promise.all(majority.map(closeOf))).every((c) => (c.closedForMs ?? 0) >= 2 * graceMs), 10_000);
  for (const node of majority) {
    const close = await closeOf(node);
    expect(close).toMatchObject({ state: 'lingering', waitingFor: [cut.peerId], reason: null, graceMs, lingerMaxMs: 60_000 });
    expect(close.acknowledged).toEqual(majority.filter((n) => n !== node).map((n) => n.peerId));
  }
  expect(left.size).toBe(0);
  expect(await closeOf(cut)).toMatchObject({ state: 'open', waitingFor: [] });
  expect(cut.runtime.driver.core.lifecycleState()).not.toBe('STOPPED');

  mesh.heal();
  await waitFor('every node to leave', () => left.size === 3, 30_000);
  expect(await cut.runtime.meshClosed).toMatchObject({ role: 'removed' });
  for (const node of mesh.nodes) expect(left.get(node)!.why).toBe('acknowledged');
  // Nobody left before the healed rank had learned the close.
  for (const node of majority) expect(left.get(node)!.atMs).toBeGreaterThan(cutClosedAtMs);
  expect(cut.runtime.driver.core.lifecycleState()).toBe('STOPPED');
  expect((await closeOf(majority[0]!)).state).toBe('exiting');
}, 120_000);

test('a rank cut off for good: the majority leaves at closeLingerMs, not before', async () => {
  const lingerMaxMs = 2500;
  const { majority, cut } = await stopWithOneCutOff(lingerMaxMs);
  const closedAtMs = performance.now();
  const whys = await Promise.all(majority.map((n) => n.runtime.closeLinger.done));
  const lingeredMs = performance.now() - closedAtMs;
  expect(whys).toEqual(['bound', 'bound']);
  // Closed a moment before closedAtMs was taken, so allow a little under the bound.
  expect(lingeredMs).toBeGreaterThan(lingerMaxMs - 1000);
  expect(await closeOf(majority[0]!)).toMatchObject({ state: 'exiting', reason: 'bound', waitingFor: [cut.peerId] });
  expect(await closeOf(cut)).toMatchObject({ state: 'open' });
}, 120_000);
