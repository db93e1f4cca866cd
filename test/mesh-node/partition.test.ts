// Covers five real nodes (libp2p, the core and its driver, in one process) under a 2|3
// partition: the three commit a view without the two, the two commit nothing, and after the
// heal all five converge on one view with every rank active again.
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { activeMembers, InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

let mesh: InprocMesh;

beforeAll(async () => {
  mesh = await InprocMesh.start({ nodes: 5 });
}, 30_000);

afterAll(async () => {
  await mesh?.stop();
});

const epochOf = (node: InprocNode): number => mesh.view(node)?.epoch ?? 0;

test('2|3 split: the majority commits without the minority, the minority commits nothing; heal converges', async () => {
  const all = mesh.nodes;
  await waitFor('the first view at all five nodes', () => all.every((n) => epochOf(n) === 1), 20_000);
  const first = mesh.view(all[0]!)!;
  expect(activeMembers(first)).toHaveLength(5);
  for (const node of all) expect(mesh.view(node)).toEqual(first);

  // Every node dials the peers it hears through relays, so each side of the cut stays
  // connected: a node whose only links ran to the minority would otherwise be cut off from
  // the majority too, and three of five could not commit anything.
  await waitFor('every node connected to the four others', () => all.every((n) => n.runtime.transport.connectedPeers().length === 4), 20_000);

  const minority = all.slice(0, 2);
  const majority = all.slice(2);
  const minorityPeers = new Set(minority.map((n) => n.peerId));
  await mesh.partition(minority, majority);

  await waitFor(
    'the majority to commit a view without the minority',
    () => majority.every((n) => {
      const view = mesh.view(n);
      return view !== null && view.epoch > 1 && activeMembers(view).every((p) => !minorityPeers.has(p));
    }),
    // Three of five cannot take the fast path (it needs four identical votes), so a classic
    // round decides: about 1.6 s alone.
    45_000,
  );
  const cut = mesh.view(majority[0]!)!;
  for (const node of majority) expect(mesh.view(node)).toEqual(cut);
  expect(activeMembers(cut).sort()).toEqual(majority.map((n) => n.peerId).sort());

  // The minority keeps running, suspects the majority, and must still not advance: give it
  // 40 of its own ticks (several suspicion periods and classic-round fallbacks) after that.
  const minorityViewsBefore = minority.map((n) => n.views.length);
  const core = (n: InprocNode) => n.runtime.driver.core;
  await waitFor('the minority to suspect the majority', () =>
    minority.every((n) => core(n).members().filter((m) => !minorityPeers.has(m.peerId)).every((m) => m.liveness !== 'alive')),
  );
  const ticksFrom = minority.map((n) => core(n).currentTick());
  await waitFor('40 more ticks at the minority', () => minority.every((n, i) => core(n).currentTick() >= ticksFrom[i]! + 40));
  for (const [i, node] of minority.entries()) {
    expect(node.views.length).toBe(minorityViewsBefore[i]!);
    expect(epochOf(node)).toBe(1);
  }

  mesh.heal();
  await waitFor(
    'all five to converge on one view with five active ranks',
    () => {
      const views = all.map((n) => mesh.view(n));
      const firstView = views[0];
      return firstView !== null && firstView !== undefined && activeMembers(firstView).length === 5 && views.every((v) => JSON.stringify(v) === JSON.stringify(firstView));
    },
    30_000,
  );
  const healed = mesh.view(all[0]!)!;
  expect(healed.epoch).toBeGreaterThan(cut.epoch);

  // Agreement across the whole run: no two nodes recorded different views for one epoch.
  const byEpoch = new Map<string, string>();
  for (const node of all) {
    for (const view of node.views) {
      const key = `${view.generation}/${view.epoch}`;
      const json = JSON.stringify(view);
      expect(byEpoch.get(key) ?? json).toBe(json);
      byEpoch.set(key, json);
    }
  }
}, 120_000);
