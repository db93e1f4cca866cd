// Covers the monitoring ring (who probes whom, at constant cost per node), the probe history's report/withdraw verdicts, and the membership rules built on them: a report on failed probes is not withdrawn by hearing gossip, only by answered probes, and an observer failing to reach all its subjects blames none.
import { describe, expect, test } from 'bun:test';
import { ConfigError, resolveConfig } from '../../mesh/config.ts';
import { Membership } from '../../mesh/membership.ts';
import { ProbeHistory, observersOf, watchedBy } from '../../mesh/observers.ts';
import type { View } from '../../mesh/view.ts';

function viewOf(active: number, spares = 0, holes: number[] = []): View {
  const ranks = Array.from({ length: active }, (_, r) => (holes.includes(r) ? null : { peerId: `p${r}`, bootId: 'b' }));
  return {
    meshId: 'm',
    generation: 1,
    epoch: 1,
    worldSize: active,
    ranks,
    spares: Array.from({ length: spares }, (_, j) => ({ peerId: `s${j}`, bootId: 'b' })),
    closed: false,
  };
}

describe('the monitoring ring', () => {
  test('each member probes the K members after it in rank order, and has K observers', () => {
    const v = viewOf(6);
    expect(watchedBy(v, 'p0', 3).map((i) => i.peerId)).toEqual(['p1', 'p2', 'p3']);
    expect(watchedBy(v, 'p4', 3).map((i) => i.peerId)).toEqual(['p5', 'p0', 'p1']);
    expect(observersOf(v, 'p1', 3).sort()).toEqual(['p0', 'p4', 'p5']);
    for (let r = 0; r < 6; r++) {
      const subject = `p${r}`;
      const watchers = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'].filter((o) => watchedBy(v, o, 3).some((i) => i.peerId === subject));
      expect(watchers.sort()).toEqual(observersOf(v, subject, 3).sort());
      expect(watchers).not.toContain(subject);
    }
  });

  test('the cost per node stays K however large the mesh; small meshes watch everyone else', () => {
    for (const n of [2, 3, 4, 8, 64, 512]) {
      const v = viewOf(n);
      const k = Math.min(n - 1, 3);
      for (const p of ['p0', `p${n - 1}`]) {
        expect(watchedBy(v, p, 3).length).toBe(k);
        expect(observersOf(v, p, 3).length).toBe(k);
      }
    }
    expect(watchedBy(viewOf(1), 'p0', 3)).toEqual([]);
  });

  test('empty ranks are skipped; spares get K observers spread over the members; outsiders watch nothing', () => {
    const v = viewOf(5, 2, [2]);
    expect(watchedBy(v, 'p1', 3).map((i) => i.peerId)).toEqual(['p3', 'p4', 'p0', 's0', 's1']);
    expect(watchedBy(v, 'p4', 3).map((i) => i.peerId)).toEqual(['p0', 'p1', 'p3', 's1']);
    expect(observersOf(v, 's0', 3)).toEqual(['p0', 'p1', 'p3']);
    expect(observersOf(v, 's1', 3)).toEqual(['p1', 'p3', 'p4']);
    expect(observersOf(v, 'p2', 3)).toEqual([]);
    expect(watchedBy(v, 's0', 3)).toEqual([]);
    expect(watchedBy(v, 'nobody', 3)).toEqual([]);
  });
});

describe('ProbeHistory', () => {
  const table: [string, boolean[], 'report' | 'withdraw' | 'keep'][] = [
    ['no probes yet', [], 'keep'],
    ['one answered of one (too few to tell)', [true], 'keep'],
    ['two failures of five (one short of the threshold)', [false, true, false, true, true], 'keep'],
    ['one failure of five', [true, true, false, true, true], 'withdraw'],
    ['three failures of five', [false, true, false, true, false], 'report'],
    ['three failures, then answers push them out of the window', [false, false, false, true, true, true, true], 'withdraw'],
    ['a full window answered', [false, false, false, true, true, true, true, true], 'withdraw'],
    ['three answered of three (no majority can fail)', [true, true, true], 'withdraw'],
  ];
  for (const [name, outcomes, verdict] of table) {
    test(`${name} → ${verdict}`, () => {
      const h = new ProbeHistory(5, 3);
      for (const ok of outcomes) h.record(ok);
      expect(h.verdict()).toBe(verdict);
    });
  }

  test('a bad window or threshold is refused', () => {
    expect(() => new ProbeHistory(0, 1)).toThrow(RangeError);
    expect(() => new ProbeHistory(5, 6)).toThrow(RangeError);
  });
});

describe('probe configuration', () => {
  const base = { meshId: 'm', self: 'a', bootId: 'b', worldSize: 3, seed: 1 };
  test('a report needs a strict majority of the window, and at least two observers', () => {
    expect(() => resolveConfig({ ...base, probeWindow: 6, probeFailuresToReport: 3 })).toThrow(ConfigError);
    expect(() => resolveConfig({ ...base, probeWindow: 4, probeFailuresToReport: 5 })).toThrow(ConfigError);
    expect(() => resolveConfig({ ...base, probeObservers: 1 })).toThrow(ConfigError);
    expect(resolveConfig({ ...base, probeWindow: 6, probeFailuresToReport: 4 }).probeFailuresToReport).toBe(4);
  });
});

describe('Membership with scheduled probes', () => {
  const config = resolveConfig({ meshId: 'm', self: 'p0', bootId: 'b', worldSize: 5, seed: 1 });
  const hb = { bootId: 'b', role: 'member' as const, ready: true, rememberedRank: 0, closeRequested: false, reports: [] };

  /** Ticks a membership of p0 in a 5-member view; every scheduled probe of `lossy` fails, others answer. */
  function run(m: Membership, v: View, from: number, to: number, lossy: (now: number) => boolean): void {
    for (let now = from; now < to; now++) {
      for (let r = 1; r < 5; r++) m.heard(`p${r}`, now, 1, 1, { ...hb, rememberedRank: r }, 'b');
      for (const probe of m.detect(v, 'p0', 'b', now)) {
        expect(probe.suspected).toBe(false);
        m.probeResult(v, probe.peer, !(probe.peer === 'p2' && lossy(now)), now, false, probe.id);
      }
    }
  }

  test('only ring subjects are probed on schedule; most probes failing reports the subject though it is heard all along; only answered probes withdraw it', () => {
    const m = new Membership(config);
    const v = viewOf(5);
    const probed = new Set<string>();
    for (let now = 0; now < 12; now++) {
      for (let r = 1; r < 5; r++) m.heard(`p${r}`, now, 1, 1, hb, 'b');
      for (const p of m.detect(v, 'p0', 'b', now)) {
        probed.add(p.peer);
        m.probeResult(v, p.peer, true, now, true, p.id);
      }
    }
    expect([...probed].sort()).toEqual(['p1', 'p2', 'p3']);
    expect(m.reports()).toEqual([]);

    run(m, v, 12, 40, () => true);
    expect(m.reports()).toEqual([{ peerId: 'p2', bootId: 'b' }]);
    expect(m.takeNewReports()).toEqual([{ inc: { peerId: 'p2', bootId: 'b' }, reason: 'probes' }]);
    // Heard without a gap far beyond refuteTicks while its probes still fail: the report stands.
    run(m, v, 40, 40 + 3 * config.refuteTicks, () => true);
    expect(m.reports()).toEqual([{ peerId: 'p2', bootId: 'b' }]);
    // Its probes answer again: once most of the window answered, the report is withdrawn.
    run(m, v, 80, 80 + config.probeWindow * config.probeIntervalTicks + 1, () => false);
    expect(m.reports()).toEqual([]);
  });

  test('an observer whose probes of all its subjects fail blames itself (a starved or lossy observer), not them', () => {
    const m = new Membership(config);
    const v = viewOf(5);
    for (let now = 0; now < 60; now++) {
      for (let r = 1; r < 5; r++) m.heard(`p${r}`, now, 1, 1, hb, 'b');
      for (const probe of m.detect(v, 'p0', 'b', now)) m.probeResult(v, probe.peer, false, now, false, probe.id);
    }
    expect(m.reports()).toEqual([]);
  });

  test('a subject that just answered is not reported on older failures, even once local health clears the observer', () => {
    const m = new Membership(config);
    const v = viewOf(5);
    const heardAll = (now: number, p1Boot: string) => {
      for (let r = 1; r < 5; r++) m.heard(`p${r}`, now, 1, 1, { ...hb, rememberedRank: r }, r === 1 ? p1Boot : 'b');
    };
    // A spell in which every probe fails: the observer blames itself and reports nobody.
    let now = 0;
    for (; now < 60; now++) {
      heardAll(now, 'b');
      for (const probe of m.detect(v, 'p0', 'b', now)) m.probeResult(v, probe.peer, false, now, false, probe.id);
    }
    // The spell ends: each subject answers once; most of every window still failed.
    const answered = new Set<string>();
    for (; answered.size < 3; now++) {
      heardAll(now, 'b');
      for (const probe of m.detect(v, 'p0', 'b', now)) {
        answered.add(probe.peer);
        m.probeResult(v, probe.peer, true, now, false, probe.id);
      }
    }
    expect(m.reports()).toEqual([]);
    // p1 restarts: its new incarnation is a fresh watch with no failures, so local health no
    // longer excuses the observer. p2's and p3's windows still hold the spell's failures, but
    // their latest probes answered, and they keep answering: nobody is reported.
    const v2: View = { ...v, epoch: v.epoch + 1, ranks: v.ranks.map((h) => (h?.peerId === 'p1' ? { peerId: 'p1', bootId: 'b2' } : h)) };
    for (const stop = now + 2 * config.probeIntervalTicks; now < stop; now++) {
      heardAll(now, 'b2');
      for (const probe of m.detect(v2, 'p0', 'b', now)) m.probeResult(v2, probe.peer, true, now, false, probe.id);
    }
    expect(m.reports()).toEqual([]);
    // A subject that fails again, while the others answer, is reported.
    for (const stop = now + config.probeWindow * config.probeIntervalTicks; now < stop; now++) {
      heardAll(now, 'b2');
      for (const probe of m.detect(v2, 'p0', 'b', now)) m.probeResult(v2, probe.peer, probe.peer !== 'p2', now, false, probe.id);
    }
    expect(m.reports()).toEqual([{ peerId: 'p2', bootId: 'b' }]);
  });

  test('a result for a probe no longer in flight is ignored', () => {
    const m = new Membership(config);
    const v = viewOf(5);
    let first: { peer: string; id: number } | undefined;
    for (let now = 0; now < 3 && !first; now++) first = m.detect(v, 'p0', 'b', now)[0];
    expect(first).toBeDefined();
    // A stale id changes nothing, however often it arrives.
    for (let i = 0; i < 5; i++) m.probeResult(v, first!.peer, false, 3, false, first!.id + 1000);
    m.probeResult(v, first!.peer, true, 3, true, first!.id);
    for (let i = 0; i < 5; i++) m.probeResult(v, first!.peer, false, 3, false, first!.id);
    expect(m.reports()).toEqual([]);
  });
});
