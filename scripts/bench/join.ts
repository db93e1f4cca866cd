// Join benchmark: what a joiner's warm-up costs the healthy ranks. N real node processes
// (worldSize N) serve a steady closed-loop load on every rank; one rank is killed and, once
// the others serve without it, started again with the same command and a warm-up of
// --warm-up-ms. Measured, per N:
//   - the healthy ranks' throughput while the joiner warms up, as a share of their steady
//     throughput just before it started (target ≥ 97 %);
//   - the longest stall of any healthy rank around the admission (the longest gap between two
//     of its completed requests), in barrier rounds: a barrier round is one gossip message
//     reaching every node, measured in the same run, under the same load, with the gossip
//     probe (target ≤ 2);
//   - the same run with synchronous admission (engineReadyBeforeWarmUp: the joiner is taken
//     in at once and the ranks wait for its warm-up) as the baseline, and the ratios.
// Times come from one clock: the nodes' logs and the client's completions (wall ms, one host).
// Usage: bun scripts/bench/join.ts [--sizes 4,8] [--warm-up-ms 10000] [--steady-ms 5000]
// JOIN_BENCH_DEBUG=1 also prints where each rank's longest gap falls and the ranks' log lines
// around the admission (to see where a stall goes).
import { Command } from 'commander';
import { type LogRecord, ProcCluster, type ProcNode } from '../lib/proc-cluster.ts';

const opts = new Command('join')
  .option('--sizes <list>', 'numbers of ranks (node processes)', '4,8')
  .option('--warm-up-ms <ms>', "the joiner's warm-up", '10000')
  .option('--steady-ms <ms>', 'steady-state window before the joiner starts', '5000')
  .option('--workers <n>', 'requests kept in flight per rank', '2')
  .option('--probes <n>', 'gossip probes per run (the barrier-round yardstick)', '10')
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ sizes: string; warmUpMs: string; steadyMs: string; workers: string; probes: string }>();

const sizes = opts.sizes.split(',').filter(Boolean).map(Number);
const warmUpMs = Number(opts.warmUpMs);
const steadyMs = Number(opts.steadyMs);
const workersPerRank = Number(opts.workers);
const token = 'bench-token';
const nowMs = (): number => performance.timeOrigin + performance.now();
const log = (line: string): void => void process.stderr.write(`join: ${line}\n`);

type Mode = 'async' | 'sync';
interface Run {
  ranks: number;
  mode: Mode;
  steadyRps: number;
  warmRps: number;
  warmWindowMs: number;
  /** Longest gap between two completions of one healthy rank, from 1 s before admission to 3 s after. */
  stallMs: number;
  /** Median time for one gossip message to reach every node. */
  roundMs: number;
  lost: number;
  failure?: string;
}
const runs: Run[] = [];

for (const n of sizes) {
  for (const mode of ['async', 'sync'] as const) {
    try {
      runs.push(await measure(n, mode));
    } catch (err) {
      log(`N=${n} ${mode}: ${(err as Error).message}`);
      runs.push({ ranks: n, mode, steadyRps: 0, warmRps: 0, warmWindowMs: 0, stallMs: 0, roundMs: 0, lost: 0, failure: (err as Error).message });
    }
  }
}
report();

async function measure(n: number, mode: Mode): Promise<Run> {
  log(`N=${n} ${mode}: starting ${n} node processes (warm-up ${warmUpMs} ms each)`);
  const cluster = await ProcCluster.start({
    nodes: n,
    env: {
      RANKMESH_ENGINE_WARM_UP_MS: String(warmUpMs),
      RANKMESH_ENGINE_READY_BEFORE_WARM_UP: mode === 'sync' ? 'true' : 'false',
      // Ranks wait this long for a peer's ring links: longer than the warm-up, so the
      // synchronous baseline waits for the joiner instead of timing out and retrying.
      RANKMESH_RANK_CONNECT_TIMEOUT_MS: String(warmUpMs + 20_000),
      RANKMESH_DATA_PLANE_ANNOUNCE_INTERVAL_MS: '500',
      RANKMESH_RANK_RETRY_MS: '200',
    },
  });
  const load = new Load();
  try {
    const byRank = await serving(cluster.nodes, warmUpMs + 60_000);
    const joiner = byRank[byRank.length - 1]!;
    const healthy = byRank.filter((x) => x !== joiner);
    for (const node of healthy) load.start(node, workersPerRank);
    // Kill the last rank; the others serve an epoch without it.
    await Bun.sleep(1000);
    joiner.process.kill('SIGKILL');
    await joiner.process.exited;
    await serving(healthy, 30_000);
    await Bun.sleep(1000);
    const steadyFrom = nowMs();
    await Bun.sleep(steadyMs);
    const steadyTo = nowMs();
    // The yardstick is taken under the same load, on the same processes.
    const roundMs = await barrierRound(cluster, healthy);

    const marks = healthy.map((x) => x.logs.length);
    cluster.spawn(joiner);
    const warming = await cluster.waitForLog(joiner, (r) => r.msg === 'join phase: warming', 30_000);
    // Admission: the first view at a healthy rank with every rank held again.
    const full = (1n << BigInt(n)) - 1n;
    const admitted = await cluster.waitForLog(healthy[0]!, (r) => r.msg === 'view committed' && BigInt(`0x${String(r.mask)}`) === full, warmUpMs + 60_000, marks[0]);
    const warmFrom = Number(warming.time);
    const warmTo = mode === 'async' ? Number(admitted.time) : warmFrom + warmUpMs;
    await serving(cluster.nodes, warmUpMs + 60_000);
    await Bun.sleep(3000);
    await load.stop();
    const steadyRps = load.rate(healthy, steadyFrom, steadyTo);
    // In the synchronous run the ranks take the joiner in at once, so its whole warm-up is the window.
    const warmRps = load.rate(healthy, warmFrom, warmTo);
    const at = Number(admitted.time);
    const stallMs = Math.max(...healthy.map((x) => load.longestGap(x, mode === 'async' ? at - 1000 : warmFrom, mode === 'async' ? at + 3000 : warmTo + 3000)));
    if (process.env.JOIN_BENCH_DEBUG) {
      const buckets: string[] = [];
      for (let t = steadyFrom; t < at + 3000; t += 1000) buckets.push(`${Math.round(t - warmFrom)}:${load.rate(healthy, t, t + 1000).toFixed(0)}`);
      log(`req/s per second, ms from the joiner's warm-up start: ${buckets.join(' ')}`);
      for (const x of cluster.nodes) for (const r of x.logs) if (Number(r.time) > warmFrom - 3000 && Number(r.time) < at - 3000 && (r.msg === 'view committed' || r.component === 'rank' || Number(r.level) >= 40)) log(`${x.name} ${Number(r.time) - warmFrom} (from warm-up) ${r.msg}`);
      for (const x of cluster.nodes) for (const r of x.logs) if ((r.component === 'rank' || r.msg === 'view committed') && Math.abs(Number(r.time) - at) < 3000) log(`${x.name} ${Number(r.time) - at} ${r.msg}`);
    }
    log(`N=${n} ${mode}: steady ${steadyRps.toFixed(1)} req/s, during warm-up ${warmRps.toFixed(1)} req/s over ${Math.round(warmTo - warmFrom)} ms, longest stall ${stallMs.toFixed(0)} ms, barrier round ${roundMs.toFixed(1)} ms, ${load.retries} retries`);
    return { ranks: n, mode, steadyRps, warmRps, warmWindowMs: warmTo - warmFrom, stallMs, roundMs, lost: load.lost };
  } finally {
    await load.stop();
    await cluster.stop();
  }
}

/** Waits until every node serves one epoch; returns them ordered by rank. */
async function serving(nodes: readonly ProcNode[], timeoutMs: number): Promise<ProcNode[]> {
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    const st = await Promise.all(nodes.map((x) => get(x, '/v1/rank') as Promise<{ serving: boolean; epoch: number; rank: number } | null>));
    if (st.every((s) => s !== null && s.serving && s.epoch === st[0]!.epoch)) {
      return nodes.map((x, i) => ({ x, r: st[i]!.rank })).sort((a, b) => a.r - b.r).map((e) => e.x);
    }
    if (nowMs() > deadline) throw new Error(`ranks not serving one epoch within ${timeoutMs} ms`);
    await Bun.sleep(50);
  }
}

/** Median over --probes gossip probes of the time one message takes to reach every node. */
async function barrierRound(cluster: ProcCluster, nodes: readonly ProcNode[]): Promise<number> {
  const times: number[] = [];
  for (let p = 0; p < Number(opts.probes); p++) {
    const sender = nodes[p % nodes.length]!;
    const others = nodes.filter((x) => x !== sender);
    const marks = others.map((x) => x.logs.length);
    const res = await fetch(`${sender.httpUrl}/v1/debug/gossip-probe`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    const sent = (await res.json()) as { id: string; sentAtMs: number };
    const seen = await Promise.all(others.map((x, i) => cluster.waitForLog(x, (r: LogRecord) => r.msg === 'gossip probe received' && r.probeId === sent.id, 10_000, marks[i])));
    times.push(Math.max(...seen.map((r) => Number(r.receivedAtMs))) - sent.sentAtMs);
    await Bun.sleep(100);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

async function get(node: ProcNode, path: string): Promise<unknown> {
  try {
    const res = await fetch(`${node.httpUrl}${path}`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? await res.json() : null;
  } catch {
    return null;
  }
}

/**
 * Closed-loop clients: each keeps one request in flight on its rank, sends the next when the
 * answer comes, and retries a refused request on the same rank (so nothing is lost). Every
 * completion is kept with its time.
 */
class Load {
  private readonly done = new Map<string, number[]>();
  private readonly workers: Promise<void>[] = [];
  private running = true;
  retries = 0;
  lost = 0;
  private seq = 0;

  start(node: ProcNode, workers: number): void {
    this.done.set(node.name, []);
    for (let w = 0; w < workers; w++) this.workers.push(this.work(node));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  rate(nodes: readonly ProcNode[], from: number, to: number): number {
    let count = 0;
    for (const node of nodes) for (const t of this.done.get(node.name) ?? []) if (t >= from && t < to) count++;
    return (count * 1000) / Math.max(1, to - from);
  }

  longestGap(node: ProcNode, from: number, to: number): number {
    const times = (this.done.get(node.name) ?? []).filter((t) => t >= from && t <= to);
    let gap = 0;
    let at = 0;
    for (let i = 1; i < times.length; i++) if (times[i]! - times[i - 1]! > gap) [gap, at] = [times[i]! - times[i - 1]!, times[i - 1]!];
    if (process.env.JOIN_BENCH_DEBUG) log(`${node.name}: longest gap ${gap.toFixed(0)} ms starting ${(at - from).toFixed(0)} ms into the window`);
    // No completion at all in the window is a stall of the whole window.
    return times.length < 2 ? to - from : gap;
  }

  private async work(node: ProcNode): Promise<void> {
    const times = this.done.get(node.name)!;
    while (this.running) {
      const id = `b${++this.seq}`;
      const input = Array.from({ length: 8 }, (_, i) => (this.seq * 7 + i * 13) % 256);
      let ok = false;
      const deadline = nowMs() + 120_000;
      while (!ok && nowMs() < deadline) {
        try {
          const res = await fetch(`${node.httpUrl}/v1/rank/infer`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ id, input }),
            signal: AbortSignal.timeout(60_000),
          });
          ok = res.status === 200;
          await res.arrayBuffer();
        } catch {
          ok = false;
        }
        if (!ok) {
          this.retries++;
          if (!this.running) break;
          await Bun.sleep(20);
        }
      }
      if (ok) times.push(nowMs());
      else if (this.running) this.lost++;
    }
  }
}

function report(): void {
  console.log('');
  console.log('| ranks | admission | steady req/s (healthy ranks) | req/s during the joiner\'s warm-up | share | longest stall | barrier round | stall in rounds |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of runs) {
    if (r.failure) {
      console.log(`| ${r.ranks} | ${r.mode} | failed: ${r.failure} | | | | | |`);
      continue;
    }
    const share = r.steadyRps > 0 ? (100 * r.warmRps) / r.steadyRps : 0;
    console.log(`| ${r.ranks} | ${r.mode === 'async' ? 'deferred (rankmesh)' : 'synchronous (baseline)'} | ${r.steadyRps.toFixed(1)} | ${r.warmRps.toFixed(1)} over ${(r.warmWindowMs / 1000).toFixed(1)} s | ${share.toFixed(1)} % | ${r.stallMs.toFixed(0)} ms | ${r.roundMs.toFixed(1)} ms | ${(r.stallMs / Math.max(0.001, r.roundMs)).toFixed(2)} |`);
  }
  console.log('');
  for (const n of sizes) {
    const a = runs.find((r) => r.ranks === n && r.mode === 'async');
    const s = runs.find((r) => r.ranks === n && r.mode === 'sync');
    if (!a || !s || a.failure || s.failure) continue;
    const shareA = (100 * a.warmRps) / a.steadyRps;
    const shareS = (100 * s.warmRps) / s.steadyRps;
    console.log(`N=${n}: throughput during warm-up ${shareA.toFixed(1)} % of steady (synchronous ${shareS.toFixed(1)} %); longest stall ${a.stallMs.toFixed(0)} ms vs ${s.stallMs.toFixed(0)} ms synchronous (${(s.stallMs / Math.max(1, a.stallMs)).toFixed(1)}× shorter); lost requests ${a.lost + s.lost}`);
  }
  console.log('');
  for (const n of sizes) {
    const a = runs.find((r) => r.ranks === n && r.mode === 'async');
    if (!a || a.failure) {
      console.log(`bench join-throughput-${n}: n/a % (target >= 97) short`);
      console.log(`bench join-stall-${n}: n/a rounds (target <= 2) short`);
      continue;
    }
    const share = (100 * a.warmRps) / a.steadyRps;
    const rounds = a.stallMs / a.roundMs;
    console.log(`bench join-throughput-${n}: ${share.toFixed(1)} % (target >= 97) ${share >= 97 ? 'ok' : 'short'}`);
    console.log(`bench join-stall-${n}: ${rounds.toFixed(2)} rounds (target <= 2) ${rounds <= 2 ? 'ok' : 'short'}`);
  }
}
