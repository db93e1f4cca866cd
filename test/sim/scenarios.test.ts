// Scenario tests for the classic membership traps, each on a fixed seed with the safety checkers running on every event.
import { describe, expect, test } from 'bun:test';
import { LIVENESS_TICKS_MAX, converged } from '../../mesh/sim/run.ts';
import type { Message } from '../../mesh/wire.ts';
import { formed, holders, viewOf } from './helpers.ts';

const settle = (f: ReturnType<typeof formed>) => f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null, LIVENESS_TICKS_MAX);

describe('partitions', () => {
  test('2|3 split: the three commit a view without the two, the two commit nothing, healing reunites all five', () => {
    const f = formed(5, 11);
    const minority = ['p0', 'p1'];
    const majority = ['p2', 'p3', 'p4'];
    const before = viewOf(f, 'p0').epoch;
    f.cluster.network.split(minority, majority);
    f.cluster.runTicks(150);
    const v = viewOf(f, 'p2');
    expect(holders(v)).toEqual([null, null, 'p2', 'p3', 'p4']);
    for (const p of majority) expect(viewOf(f, p)).toEqual(v);
    for (const p of minority) expect(viewOf(f, p).epoch).toBe(before);
    f.cluster.network.heal();
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    // Both come back, each into its remembered rank.
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
  });

  test('isolate one: the other four remove it, it never advances alone, and it returns when healed', () => {
    const f = formed(5, 12);
    f.cluster.network.split(['p4'], ['p0', 'p1', 'p2', 'p3']);
    f.cluster.runTicks(100);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3', null]);
    expect(viewOf(f, 'p4').epoch).toBe(1);
    f.cluster.network.heal();
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p4'))).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
  });

  test('a flapping link between two members changes no view: one bad link cannot evict anyone', () => {
    const f = formed(5, 13);
    let reported = 0;
    for (let i = 0; i < 40; i++) {
      if (i % 2 === 0) f.cluster.network.split(['p0'], ['p1']);
      else f.cluster.network.heal();
      f.cluster.runTicks(8);
      if (f.cluster.node('p0').core!.members().find((m) => m.peerId === 'p1')?.liveness === 'reported') reported++;
    }
    // The two ends did report each other; that alone must not be enough.
    expect(reported).toBeGreaterThan(0);
    f.cluster.network.heal();
    f.cluster.runTicks(30);
    expect(f.checkers.latest()!.epoch).toBe(1);
  });

  test("flip-flop (Rapid): a node whose links go down and up every 20 ticks is removed once and stays out until it is stable", () => {
    const f = formed(6, 14);
    const others = ['p0', 'p1', 'p2', 'p3', 'p4'];
    const epochs: number[] = [];
    for (let cycle = 0; cycle < 5; cycle++) {
      f.cluster.network.split(['p5'], others);
      f.cluster.runTicks(20);
      f.cluster.network.heal();
      f.cluster.runTicks(20);
      epochs.push(viewOf(f, 'p0').epoch);
    }
    // One change removed it; no re-admission while it flapped.
    expect(epochs).toEqual([2, 2, 2, 2, 2]);
    expect(holders(viewOf(f, 'p0'))[5]).toBeNull();
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))[5]).toBe('p5');
  });

  test('80% egress loss on one node: it alone is removed', () => {
    const f = formed(5, 15);
    f.cluster.network.egressLoss.set('p3', 0.8);
    f.cluster.runTicks(150);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', null, 'p4']);
  });

  test('80% egress loss with gossip relayed by the others (it is still heard): its ring observers remove it on failed probes, it stays out while the loss lasts, and no healthy node is removed', () => {
    const f = formed(5, 17, { gossipRelay: true });
    const reasons: string[] = [];
    const commits: (string | null)[][] = [];
    let removedAtTick = -1;
    f.cluster.onAction = (peer, action) => {
      if (action.kind === 'reported' && action.peerId === 'p3' && peer !== 'p3') reasons.push(action.reason);
      if (action.kind === 'viewCommitted' && peer === 'p0') {
        commits.push(holders(action.view));
        if (removedAtTick < 0 && action.view.ranks[3] === null) removedAtTick = f.cluster.node('p0').core!.currentTick();
      }
    };
    const startTick = f.cluster.node('p0').core!.currentTick();
    f.cluster.network.egressLoss.set('p3', 0.8);
    f.cluster.runTicks(300);
    // Relayed copies keep p3 heard, so it is the probes, not silence, that report it.
    expect(reasons).toContain('probes');
    expect(f.cluster.node('p0').core!.members().find((m) => m.peerId === 'p3')?.liveness).toBe('alive');
    expect(removedAtTick).toBeGreaterThan(0);
    expect(removedAtTick - startTick).toBeLessThan(60);
    // Removed once, never re-admitted while the loss lasted, and no healthy rank ever emptied.
    expect(commits).toEqual([['p0', 'p1', 'p2', null, 'p4']]);
    f.cluster.network.heal();
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
  });

  test('80% ingress loss on one node: it alone is removed; its own reports of the others evict nobody', () => {
    const f = formed(5, 16);
    const reportedBy3 = new Set<string>();
    f.cluster.onAction = (peer, action) => {
      if (peer === 'p3' && action.kind === 'reported') reportedBy3.add(action.peerId);
    };
    f.cluster.network.ingressLoss.set('p3', 0.8);
    f.cluster.runTicks(150);
    // It hears little and reports the others on silence, but each of them only by itself.
    expect(reportedBy3.size).toBeGreaterThan(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', null, 'p4']);
    expect(f.checkers.latest()!.epoch).toBe(2);
  });
});

describe('crashes and restarts', () => {
  test('two members crash at once: the survivors remove both in one view change', () => {
    const f = formed(5, 21);
    f.cluster.crash('p3');
    f.cluster.crash('p4');
    f.cluster.runTicks(100);
    expect(f.checkers.latest()!.epoch).toBe(2);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', null, null]);
  });

  test('a crashed member is replaced by a ready spare in the same change', () => {
    const f = formed(4, 22, {}, 3);
    expect(viewOf(f, 'p0').spares.map((s) => s.peerId)).toEqual(['p3']);
    const epoch = viewOf(f, 'p0').epoch;
    f.cluster.crash('p1');
    f.cluster.runTicks(100);
    const v = viewOf(f, 'p0');
    expect(v.epoch).toBe(epoch + 1);
    expect(holders(v)).toEqual(['p0', 'p3', 'p2']);
    expect(v.spares).toEqual([]);
  });

  test('restart before the old incarnation was removed: the new one takes the rank only through a view change', () => {
    const f = formed(5, 23);
    const oldBoot = f.cluster.node('p2').bootId;
    f.cluster.crash('p2');
    f.cluster.runTicks(1);
    f.cluster.start('p2', 0);
    const restarted = f.cluster.node('p2');
    expect(restarted.core!.rank()).toBe(-1);
    expect(viewOf(f, 'p0').ranks[2]).toEqual({ peerId: 'p2', bootId: oldBoot });
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    const v = viewOf(f, 'p0');
    expect(v.ranks[2]).toEqual({ peerId: 'p2', bootId: restarted.bootId });
    expect(restarted.core!.rank()).toBe(2);
  });

  test('the whole mesh restarts from its stored state and re-forms the same ranks by view change', () => {
    const f = formed(3, 24);
    for (const p of f.peers) f.cluster.crash(p);
    f.cluster.runTicks(5);
    for (const p of f.peers) f.cluster.start(p, 0);
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    const v = viewOf(f, 'p0');
    expect(v.generation).toBe(1);
    expect(v.ranks.map((h) => `${h?.peerId}/${h?.bootId}`)).toEqual(f.peers.map((p) => `${p}/${f.cluster.node(p).bootId}`));
  });
  test('after a close, restarted nodes form the next generation with their remembered ranks', () => {
    const f = formed(4, 25);
    f.cluster.node('p0').core!.requestClose();
    f.cluster.runTicks(60);
    expect(viewOf(f, 'p3').closed).toBe(true);
    for (const p of f.peers) f.cluster.crash(p);
    // Restart in reverse order: ranks must still follow what each node remembers.
    for (const p of [...f.peers].reverse()) f.cluster.start(p, 0);
    expect(f.cluster.node('p0').core!.phase()).toBe('forming');
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    const v = viewOf(f, 'p0');
    expect(v.generation).toBe(2);
    expect(v.epoch).toBe(1);
    expect(holders(v)).toEqual(['p0', 'p1', 'p2', 'p3']);
  });
});

describe('agreement paths', () => {
  test('simultaneous classic proposals (fast path impossible, no back-off jitter) still decide one view', () => {
    // Scheduled probes off (an interval far beyond the test), so silence alone finds the crash.
    // (Seed 1: one whose proposers collide; about three seeds in four let one of them win first.)
    const f = formed(4, 1, { timing: { fallbackJitterTicks: 0, probeIntervalTicks: 100_000 } });
    const proposers = new Set<string>();
    f.cluster.onDeliver = (from, _to, msg) => {
      if (msg.body.type === 'prepare') proposers.add(from);
      return msg;
    };
    // A host crash (no sockets closed): the survivors notice by silence, all on the same tick.
    f.cluster.crash('p3', 'host');
    // With 4 acceptors the fast quorum is 4: the three survivors must fall back to classic rounds.
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(proposers.size).toBeGreaterThanOrEqual(2);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', null]);
  });

  test('a message from the previous epoch arriving late is counted as stale and changes nothing', () => {
    const f = formed(5, 32);
    let captured: Message | null = null;
    f.cluster.onDeliver = (_from, _to, msg) => {
      if (!captured && msg.body.type === 'vote' && msg.epoch === 1) captured = msg;
      return msg;
    };
    f.cluster.crash('p4');
    f.cluster.runTicks(100);
    expect(captured).not.toBeNull();
    const v = viewOf(f, 'p0');
    expect(v.epoch).toBe(2);
    const core = f.cluster.node('p0').core!;
    const staleBefore = core.counters.stale;
    f.cluster.inject('p1', 'p0', captured!);
    f.cluster.inject('p1', 'p0', { ...captured!, body: { type: 'decide', change: { remove: [], admit: [], addSpares: [], close: true } } });
    f.cluster.runTicks(2);
    expect(core.counters.stale).toBe(staleBefore + 2);
    expect(core.view()).toBe(v);
  });

  test('close commits everywhere, and a node started afterwards learns it and stops', () => {
    const f = formed(4, 33, {}, 3);
    f.cluster.crash('p3');
    f.cluster.node('p1').core!.requestClose();
    f.cluster.runTicks(60);
    for (const p of ['p0', 'p1', 'p2']) expect(viewOf(f, p).closed).toBe(true);
    f.cluster.start('p3', 0);
    // A new incarnation of the spare: outside the view until it learns the mesh closed.
    expect(f.cluster.node('p3').core!.phase()).toBe('outsider');
    f.cluster.runTicks(20);
    expect(f.cluster.node('p3').core!.phase()).toBe('closed');
    expect(viewOf(f, 'p3')).toEqual(viewOf(f, 'p0'));
  });
});

describe('connection-loss evidence', () => {
  test('a dropped connection between two live members is probed and evicts nobody', () => {
    const f = formed(5, 51);
    const before = viewOf(f, 'p0');
    for (let i = 0; i < 10; i++) {
      f.cluster.disconnect('p1', 'p2');
      f.cluster.disconnect('p2', 'p1');
      f.cluster.runTicks(10);
    }
    for (const p of f.peers) expect(viewOf(f, p)).toEqual(before);
  });

  test('a probe on evidence that times out (not refused) reports nobody; a refused one does', () => {
    const f = formed(5, 53);
    const core = f.cluster.node('p1').core!;
    const liveness = (peer: string) => core.members().find((m) => m.peerId === peer)?.liveness;
    const drain = () => {
      while (core.hasReady()) {
        core.ready();
        core.advance();
      }
    };
    core.peerDisconnected('p2');
    drain();
    core.probeResult('p2', false, false);
    drain();
    expect(liveness('p2')).toBe('alive');
    core.peerDisconnected('p3');
    drain();
    core.probeResult('p3', false, true);
    drain();
    expect(liveness('p3')).toBe('reported');
  });

  test('a crash costs few broadcasts: only the ring observers announce their reports at once, and only the first three staying members the decision', () => {
    // Regular heartbeats rare, so every heartbeat sent after the crash is an announcement.
    const f = formed(10, 57, { timing: { heartbeatTicks: 200, suspectTicks: 400 } });
    const senders = { reports: new Set<string>(), decide: new Set<string>() };
    const voteRoutes = new Set<string>();
    f.cluster.onDeliver = (from, to, msg) => {
      if (msg.body.type === 'hb' && msg.body.reports.some((r) => r.peerId === 'p5')) senders.reports.add(from);
      if (msg.body.type === 'decide') senders.decide.add(from);
      if (msg.body.type === 'vote') voteRoutes.add(`${from}>${to}`);
      return msg;
    };
    f.cluster.crash('p5');
    const used = f.cluster.runUntil(() => f.peers.every((p) => p === 'p5' || viewOf(f, p).ranks[5] === null), LIVENESS_TICKS_MAX);
    expect(used).toBeGreaterThanOrEqual(0);
    // Every survivor saw the connection close and reported p5; p5's ring observers (the three
    // ranks before it) are the ones that said so at once.
    expect([...senders.reports].sort()).toEqual(['p2', 'p3', 'p4']);
    expect(senders.decide.size).toBeGreaterThan(0);
    for (const p of senders.decide) expect(['p0', 'p1', 'p2']).toContain(p);
    // Fast votes went to the collectors (p0, p1, p2): each of them heard from every other
    // survivor, and the only votes other members received are the collectors' own (gossiped).
    const collectors = ['p0', 'p1', 'p2'];
    for (const route of voteRoutes) {
      const [from, to] = route.split('>') as [string, string];
      if (!collectors.includes(to)) expect(collectors).toContain(from);
    }
    for (const c of collectors) {
      const heard = f.peers.filter((p) => p !== 'p5' && p !== c && voteRoutes.has(`${p}>${c}`));
      expect(heard.length).toBe(8);
    }
  });

  test('a collector gone silent does not hold up the fast round: the other two collect the votes and decide', () => {
    const f = formed(10, 58);
    const decided = new Set<string>();
    let prepares = 0;
    f.cluster.onDeliver = (from, _to, msg) => {
      if (msg.body.type === 'decide') decided.add(from);
      if (msg.body.type === 'prepare') prepares++;
      return msg;
    };
    // p1's host goes silent (nothing closes its connections, so it is not suspected yet) just
    // as p5's process dies: the change removing p5 names p0, p1 and p2 as its collectors, and
    // 8 votes, the fast quorum of 10, can still reach p0 and p2.
    f.cluster.crash('p1', 'host');
    f.cluster.crash('p5');
    const survivors = f.peers.filter((p) => p !== 'p1' && p !== 'p5');
    const used = f.cluster.runUntil(() => survivors.every((p) => viewOf(f, p).ranks[5] === null), LIVENESS_TICKS_MAX);
    expect(used).toBeGreaterThanOrEqual(0);
    expect(viewOf(f, 'p0').ranks[1]?.peerId).toBe('p1');
    expect(prepares).toBe(0);
    expect([...decided].sort()).toEqual(['p0', 'p2']);
  });

  test('a killed process (sockets closed) is removed sooner than a host that went silent', () => {
    const ticksToRemove = (how: 'process' | 'host'): number => {
      const f = formed(5, 52);
      f.cluster.crash('p4', how);
      const used = f.cluster.runUntil(() => ['p0', 'p1', 'p2', 'p3'].every((p) => viewOf(f, p).ranks[4] === null), LIVENESS_TICKS_MAX);
      expect(used).toBeGreaterThanOrEqual(0);
      return used;
    };
    const processTicks = ticksToRemove('process');
    const hostTicks = ticksToRemove('host');
    // Silence costs at least suspectTicks (6 by default) before the first probe; a closed
    // connection starts the probe at once.
    expect(processTicks).toBeLessThan(hostTicks);
  });
});
