// Covers the core's close acknowledgements in the simulator: after a STOP agreed by the majority of a 2|3 split, the closed nodes know which peers of the generation (the cut-off members they removed included) do not hold the closed view yet, and after the heal the minority learns the close by catch-up and everyone acknowledges everyone.
import { expect, test } from 'bun:test';
import type { LifecycleState } from '../../mesh/lifecycle.ts';
import { LIFECYCLE_TICKS_MAX, LIVENESS_TICKS_MAX, converged } from '../../mesh/sim/run.ts';
import { type Formed, formed, viewOf } from '../sim/helpers.ts';

const core = (f: Formed, p: string) => f.cluster.node(p).core!;
const allIn = (f: Formed, peers: readonly string[], state: LifecycleState) => peers.every((p) => core(f, p).lifecycle().state === state);

test('a STOP in a 2|3 split: the closed majority waits for the cut-off pair; after the heal the pair closes and nobody waits', () => {
  const f = formed(5, 4101, { workRate: 0 });
  const minority = ['p3', 'p4'];
  const majority = ['p0', 'p1', 'p2'];
  for (const p of f.peers) expect(core(f, p).closeAcks()).toBeNull();

  f.cluster.network.split(minority, majority);
  const cut = new Set(majority);
  expect(f.cluster.runUntil(() => converged(f.cluster, f.checkers, cut) === null && majority.every((p) => viewOf(f, p).ranks.filter((h) => h !== null).length === 3), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  core(f, 'p0').command('PAUSE');
  expect(f.cluster.runUntil(() => allIn(f, majority, 'PAUSED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  core(f, 'p1').command('STOP');
  expect(f.cluster.runUntil(() => allIn(f, majority, 'STOPPED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);

  // The closed view no longer lists the pair (a view change removed it before the close),
  // yet the majority still knows of it from the views before.
  const closed = viewOf(f, 'p0');
  expect(closed.closed).toBe(true);
  expect(closed.ranks.some((h) => h !== null && minority.includes(h.peerId))).toBe(false);
  f.cluster.runTicks(20);
  for (const p of majority) {
    const acks = core(f, p).closeAcks()!;
    expect(acks).toMatchObject({ generation: closed.generation, epoch: closed.epoch, waitingFor: minority });
    expect(acks.acknowledged).toEqual(majority.filter((q) => q !== p));
  }
  // Cut off, the pair learns nothing: it stays open and unstopped however long the cut lasts.
  f.cluster.runTicks(100);
  for (const p of minority) {
    expect(core(f, p).closeAcks()).toBeNull();
    expect(core(f, p).lifecycle().state).not.toBe('STOPPED');
  }
  expect(core(f, 'p0').closeAcks()!.waitingFor).toEqual(minority);

  // Healed: a closed node's heartbeat is newer than the pair's view, so the pair asks for it
  // (or is pushed it as a laggard) and closes; then every node has heard every other's.
  f.cluster.network.heal();
  expect(f.cluster.runUntil(() => f.peers.every((p) => core(f, p).closeAcks()?.waitingFor.length === 0), 100)).toBeGreaterThanOrEqual(0);
  for (const p of f.peers) {
    expect(viewOf(f, p)).toEqual(closed);
    expect(core(f, p).lifecycle().state).toBe('STOPPED');
    expect(core(f, p).closeAcks()!.acknowledged).toEqual(f.peers.filter((q) => q !== p));
  }
});

test('a restarted spare still warming up, cut off across STOP, is waited for too, and learns the close once it can hear', () => {
  const f = formed(4, 4102, { workRate: 0 }, 3);
  const ranks = ['p0', 'p1', 'p2'];
  expect(viewOf(f, 'p0').spares.map((s) => s.peerId)).toEqual(['p3']);
  // The spare's process dies and the view drops it; started again, it never finishes its
  // warm-up, so the new incarnation never holds a rank.
  f.cluster.crash('p3');
  expect(f.cluster.runUntil(() => ranks.every((p) => viewOf(f, p).spares.length === 0), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  f.cluster.start('p3', -1);
  expect(f.cluster.runUntil(() => core(f, 'p3').view()?.epoch === viewOf(f, 'p0').epoch, LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  f.cluster.runTicks(10);
  expect(core(f, 'p3').rank()).toBe(-1);
  f.cluster.network.split(['p3'], ranks);
  core(f, 'p0').command('PAUSE');
  expect(f.cluster.runUntil(() => allIn(f, ranks, 'PAUSED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  core(f, 'p0').command('STOP');
  expect(f.cluster.runUntil(() => allIn(f, ranks, 'STOPPED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  f.cluster.runTicks(20);
  for (const p of ranks) expect(core(f, p).closeAcks()!.waitingFor).toEqual(['p3']);
  expect(core(f, 'p3').closeAcks()).toBeNull();
  f.cluster.network.heal();
  expect(f.cluster.runUntil(() => f.peers.every((p) => core(f, p).closeAcks()?.waitingFor.length === 0), 100)).toBeGreaterThanOrEqual(0);
  expect(core(f, 'p3').closeAcks()!.acknowledged).toEqual(ranks);
});
