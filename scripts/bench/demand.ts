// Demand benchmark on 8 real ranks (in-process nodes: scripts/lib/inproc-mesh.ts — full
// runtimes over loopback libp2p, one process). Two scenarios: 2 and 4 pipelines with uneven
// demand signalled at the same moment at different nodes. Measured:
//  - time from each demand signal to the first awake rank of its pipeline (a plan round
//    assigned it and the rank reports serving it: drained, the pipeline's model loaded, its
//    group's communicator up): the node's own figure (waitedMs: from the record's open to the 201) and the client's
//    round trip of the POST (which adds this one process's HTTP queueing) — beside the
//    baseline measured in the same run on the same mesh: one barrier round over the 8 ranks;
//  - the gap, in points, between each pipeline's share of ranks and its share of remaining
//    work while simulated work runs (each rank completes steps of its pipeline at one rate,
//    reported over HTTP at random nodes): judged at every plan round after the first (the
//    round's assignment against the remaining work when it lands; a round during which a
//    pipeline completed is counted apart, as its inputs still had it open), and sampled every work
//    tick (which includes the moment after a pipeline completes and before the next round
//    moves its ranks). With 8 ranks a pipeline holding its one-rank floor while its share of
//    work is below 1/8 is off by more than 10 points by construction; the judged figure
//    leaves such a pipeline out and compares the others over the ranks and work left.
// Target: gap within 10 points after the first plan round (rlix's rebalance threshold).
//
//   bun scripts/bench/demand.ts [--ranks 8] [--trials 3]
import { Command } from 'commander';
import { shareGapPoints } from '../../mesh/planner.ts';
import { InprocMesh, type InprocNode } from '../lib/inproc-mesh.ts';

const opts = new Command('demand')
  .option('--ranks <n>', 'ranks (in-process nodes)', '8')
  .option('--trials <n>', 'runs of each scenario', '3')
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ ranks: string; trials: string }>();
const ranks = Number(opts.ranks);
const trials = Number(opts.trials);
const targetPoints = 10;
const token = 'inproc-test-token';
const stepsPerRankPerTick = 3;
const workTickMs = 50;
/**
 * The judged gap leaves out plan rounds in the last 10 % of a run's work: there one round's
 * work (a round lands on demand a round old) moves shares by more than the target, e.g.
 * 42:20 steps planned, 42:14 by the time the plan lands. Those rounds are in the all-rounds column.
 */
const tailFraction = 0.1;

const scenarios: { name: string; demand: number[] }[] = [
  { name: '2 pipelines', demand: [600, 200] },
  { name: '4 pipelines', demand: [800, 400, 200, 100] },
];
const pipelineNames = scenarios.flatMap((s, i) => Array.from({ length: trials }, (_, t) => s.demand.map((_, k) => `s${i}t${t}p${k}`)).flat());

interface Row {
  scenario: string;
  /** The node's figure: record opened → an assigned rank reports serving the pipeline (waitedMs). */
  firstRankMs: number[];
  /** The client's POST round trip. */
  roundTripMs: number[];
  /** One barrier round, measured before each trial of this scenario. */
  baselineMs: number[];
  /** Sampled every work tick: the transient after a completion, until the next round, included. */
  gapAll: number[];
  /** At each plan round after the first, pipelines at their one-rank floor by construction left out. */
  gapAtRounds: number[];
  /** The same, before the last 10 % of the work (see tailFraction). */
  gapJudged: number[];
  /** Plan rounds whose inputs a completion overtook (a pipeline closed while the round ran): not judged. */
  overtaken: number;
  rounds: number;
  seconds: number;
}

process.stderr.write(`demand: starting ${ranks} in-process nodes\n`);
const mesh = await InprocMesh.start({ nodes: ranks, settings: { pipelines: pipelineNames } });
const rows: Row[] = [];
let baselineMs: number[] = [];
try {
  await until('a full view and a first plan round on every node', () => mesh.nodes.every((n) => mesh.view(n)?.ranks.every((h) => h !== null) && n.runtime.demand.plans.current() !== null), 180_000);
  // The baseline is taken before every trial, so it sees the same load as the trial after it.
  let barrierSeq = 0;
  const baseline = async (row: Row): Promise<void> => {
    const times = await barrierRounds(mesh.nodes, barrierSeq, 5);
    barrierSeq += 5;
    baselineMs.push(...times);
    row.baselineMs.push(...times);
    process.stderr.write(`  one barrier round over ${ranks} ranks: p50 ${median(times).toFixed(1)} ms\n`);
  };
  for (let i = 0; i < scenarios.length; i++) {
    const s = scenarios[i]!;
    const row: Row = { scenario: s.name, firstRankMs: [], roundTripMs: [], baselineMs: [], gapAll: [], gapAtRounds: [], gapJudged: [], overtaken: 0, rounds: 0, seconds: 0 };
    rows.push(row);
    for (let t = 0; t < trials; t++) {
      await baseline(row);
      await runScenario(row, s.demand.map((steps, k) => ({ name: `s${i}t${t}p${k}`, steps })));
    }
  }
} finally {
  await mesh.stop();
}

console.log(`\ndemand on ${ranks} in-process ranks; baseline: one barrier round p50 ${median(baselineMs).toFixed(1)} ms`);
console.log('| scenario | time to first awake rank p50 / max (ms) | × one barrier round (p50 of this scenario\'s baselines) | POST round trip p50 (ms) | gap at plan rounds p50 / max (points) | max before the last 10 % of the work | rounds overtaken by a completion | gap sampled p50 / max (points) | samples within 10 points | plan rounds | run (s) |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const ratio = median(r.firstRankMs) / median(r.baselineMs);
  console.log(
    `| ${r.scenario} | ${median(r.firstRankMs).toFixed(1)} / ${Math.max(...r.firstRankMs).toFixed(1)} | ${ratio.toFixed(1)} | ${median(r.roundTripMs).toFixed(0)} | ${median(r.gapAtRounds).toFixed(1)} / ${Math.max(...r.gapAtRounds).toFixed(1)} | ${Math.max(...r.gapJudged).toFixed(1)} | ${r.overtaken} | ${median(r.gapAll).toFixed(1)} / ${Math.max(...r.gapAll).toFixed(1)} | ${((100 * r.gapAll.filter((g) => g <= targetPoints).length) / r.gapAll.length).toFixed(0)} % | ${r.rounds} | ${r.seconds.toFixed(1)} |`,
  );
}
for (const r of rows) {
  const worst = Math.max(...r.gapJudged);
  console.log(`bench demand-gap-${r.scenario.replace(' ', '-')}: ${worst.toFixed(1)} points max at plan rounds after the first, before the last 10 % of the work (target <= ${targetPoints}) ${worst <= targetPoints ? 'ok' : 'short'}`);
}
process.exit(0);

/** One run: signal every pipeline at once at different nodes, then work until all complete. */
async function runScenario(row: Row, pipelines: { name: string; steps: number }[]): Promise<void> {
  const started = performance.now();
  const roundsBefore = mesh.nodes[0]!.runtime.demand.counters.rounds;
  const ids = new Map<string, string>();
  const firsts = await Promise.all(
    pipelines.map(async (p, k) => {
      const t0 = performance.now();
      const r = await call(mesh.nodes[k % mesh.nodes.length]!, 'POST', `/v1/pipelines/${p.name}/demand`, { steps: p.steps, timeoutMs: 30_000 });
      if (r.status !== 201) throw new Error(`demand for ${p.name}: ${r.status} ${JSON.stringify(r.json)}`);
      ids.set(p.name, r.json.record.id as string);
      row.roundTripMs.push(performance.now() - t0);
      return r.json.waitedMs as number;
    }),
  );
  row.firstRankMs.push(...firsts);
  const observer = mesh.nodes[0]!.runtime.demand;
  await until('a plan serving every pipeline', () => pipelines.every((p) => (observer.plans.ranksFor(p.name)?.length ?? 0) > 0), 30_000);
  const initialWork = pipelines.reduce((s, p) => s + p.steps, 0);
  const liveDemand = () =>
    observer
      .records()
      .filter((r) => !r.closed && pipelines.some((p) => p.name === r.pipeline))
      .map((r) => ({ pipeline: r.pipeline, remaining: r.steps - Object.values(r.done).reduce((a, b) => a + b, 0), priority: 0 }));
  // The judged gap: each plan round's assignment against the remaining work when it lands,
  // unless a pipeline completed while the round ran (its inputs still had it open; the next
  // round moves its ranks, and the sampled column shows that transient).
  const onPlan = (p: { assignment: readonly (readonly [number, string | null])[]; demand: readonly { pipeline: string }[] }): void => {
    const live = liveDemand();
    const planned = p.demand.filter((d) => pipelines.some((x) => x.name === d.pipeline));
    if (planned.length !== live.length || planned.some((d) => !live.some((l) => l.pipeline === d.pipeline))) {
      row.overtaken++;
      return;
    }
    const gap = judgedGap(p.assignment.map(([r]) => r), live, new Map(p.assignment));
    row.gapAtRounds.push(gap);
    if (live.reduce((s, d) => s + d.remaining, 0) >= tailFraction * initialWork) row.gapJudged.push(gap);
    if (gap > targetPoints) process.stderr.write(`  gap ${gap.toFixed(1)} at a plan round: remaining ${JSON.stringify(live.map((d) => [d.pipeline, d.remaining]))}, planned on ${JSON.stringify(p.demand.map((d) => [d.pipeline, (d as { remaining?: number }).remaining]))}, ranks ${JSON.stringify(p.assignment.map(([, x]) => x))}\n`);
  };
  onPlan(observer.plans.current()!);
  observer.plans.on('change', onPlan);
  // Work: each rank completes steps of the pipeline it serves; progress goes to random nodes.
  let open = pipelines.length;
  while (open > 0 && performance.now() - started < 60_000) {
    const plan = observer.plans.current()!;
    const demand = liveDemand();
    const assignment = new Map(plan.assignment);
    const rankList = plan.assignment.map(([r]) => r);
    row.gapAll.push(shareGapPoints(rankList, demand, assignment));
    const reports = demand.map((d) => {
      const held = rankList.filter((r) => assignment.get(r) === d.pipeline).length;
      const completed = Math.min(d.remaining, held * stepsPerRankPerTick);
      const node = mesh.nodes[Math.floor(Math.random() * mesh.nodes.length)]!;
      return completed > 0 ? call(node, 'POST', `/v1/pipelines/${d.pipeline}/demand/${ids.get(d.pipeline)}/progress`, { completed }) : null;
    });
    await Promise.all(reports);
    await Bun.sleep(workTickMs);
    open = observer.records().filter((r) => !r.closed && pipelines.some((p) => p.name === r.pipeline)).length;
  }
  observer.plans.off('change', onPlan);
  if (open > 0) throw new Error(`${open} pipelines still open after 60 s`);
  row.rounds += observer.counters.rounds - roundsBefore;
  row.seconds += (performance.now() - started) / 1000;
  process.stderr.write(`  ${row.scenario}: first ranks after ${firsts.map((x) => x.toFixed(0)).join(', ')} ms; finished in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
}

/**
 * The worst gap over pipelines not held at the one-rank floor by construction. A pipeline
 * holding a single rank while its share of work is below one rank's share cannot come
 * closer, and the rank it holds is missing from the others' shares: the others are compared
 * over the ranks and the work that remain once the floor pipelines are set aside.
 */
function judgedGap(rankList: number[], demand: { pipeline: string; remaining: number }[], assignment: Map<number, string | null>): number {
  const total = demand.reduce((s, x) => s + x.remaining, 0);
  if (total === 0 || rankList.length === 0) return 0;
  const heldBy = (name: string) => rankList.filter((r) => assignment.get(r) === name).length;
  const floor = demand.filter((d) => heldBy(d.pipeline) <= 1 && d.remaining / total < 1 / rankList.length);
  const ranksLeft = rankList.length - floor.reduce((s, d) => s + heldBy(d.pipeline), 0);
  const workLeft = total - floor.reduce((s, d) => s + d.remaining, 0);
  if (ranksLeft <= 0 || workLeft <= 0) return 0;
  let worst = 0;
  for (const d of demand) {
    if (floor.includes(d) || d.remaining === 0) continue;
    worst = Math.max(worst, Math.abs(heldBy(d.pipeline) / ranksLeft - d.remaining / workLeft) * 100);
  }
  return worst;
}

/** Times `count` barrier rounds (seqs after `from`): every rank arrives at once; done when every node completed it. */
async function barrierRounds(nodes: readonly InprocNode[], from: number, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = from + 1; i <= from + count; i++) {
    let completed = 0;
    const done = new Promise<void>((resolve) => {
      for (const n of nodes) {
        const on = (r: { name: string; seq: number }): void => {
          if (r.name !== 'bench' || r.seq !== i) return;
          n.runtime.driver.off('barrier', on);
          if (++completed === nodes.length) resolve();
        };
        n.runtime.driver.on('barrier', on);
      }
    });
    const t0 = performance.now();
    for (const n of nodes) n.runtime.driver.arrive('bench', `x${i}`, i);
    await done;
    out.push(performance.now() - t0);
    await Bun.sleep(20);
  }
  return out;
}

async function call(node: InprocNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${node.httpUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

async function until(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(10);
  }
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
