// Lifecycle benchmark: how long PAUSE, UNPAUSE, SUSPEND, RESUME and STOP take, from the
// HTTP request at one node to every node in the target state, for N real node processes —
// next to the time one gossip message takes to reach every node, measured in the same run on
// the same processes (the baseline: a transition needs a few such messages, so the target is
// p50 ≤ 4 × the one-message time). PAUSE is timed idle and under load (clients keep requests
// in flight on every rank while it drains). Times come from the nodes' own logs (sub-ms wall
// clock, comparable across the processes of one host).
// Usage: bun scripts/bench/pause.ts [--sizes 4,8,16] [--trials 5] [--probes 10]
import { Command } from 'commander';
import { type LogRecord, ProcCluster, type ProcNode } from '../lib/proc-cluster.ts';

const opts = new Command('pause')
  .option('--sizes <list>', 'cluster sizes (node processes)', '4,8,16')
  .option('--trials <n>', 'transitions of each kind per size', '5')
  .option('--probes <n>', 'gossip probes per size (the baseline)', '10')
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ sizes: string; trials: string; probes: string }>();

const sizes = opts.sizes.split(',').filter(Boolean).map(Number);
const trials = Number(opts.trials);
const targetRatio = 4;
const token = 'bench-token';
const nowMs = (): number => performance.timeOrigin + performance.now();

type Kind = 'PAUSE idle' | 'PAUSE load' | 'UNPAUSE' | 'SUSPEND' | 'RESUME' | 'STOP';
const kinds: Kind[] = ['PAUSE idle', 'PAUSE load', 'UNPAUSE', 'SUSPEND', 'RESUME', 'STOP'];
interface Row {
  nodes: number;
  oneMessageMs: number[];
  times: Record<Kind, number[]>;
  exitCodes: number[];
  failure?: string;
}
const rows: Row[] = [];

for (const n of sizes) {
  process.stderr.write(`pause: starting ${n} node processes\n`);
  const cluster = await ProcCluster.start({ nodes: n, env: { RANKMESH_CLOSED_GRACE_MS: '1000' } });
  const row: Row = { nodes: n, oneMessageMs: [], times: Object.fromEntries(kinds.map((k) => [k, []])) as unknown as Row['times'], exitCodes: [] };
  rows.push(row);
  let load: Load | undefined;
  try {
    await until(`${n} ranks serving`, async () => (await Promise.all(cluster.nodes.map((x) => getJson(x, '/v1/rank')))).every((r) => r?.serving === true), 300_000);
    // Baseline: one small gossip message from one node to all others — some now, and one
    // before every timed transition, so the baseline sees the same machine as the transitions.
    const probe = async (p: number): Promise<void> => {
      const sender = cluster.nodes[p % n]!;
      const others = cluster.nodes.filter((x) => x !== sender);
      const marks = others.map((x) => x.logs.length);
      const sent = (await post(sender, '/v1/debug/gossip-probe')) as { id: string; sentAtMs: number };
      const seen = await Promise.all(others.map((x, i) => cluster.waitForLog(x, (r) => r.msg === 'gossip probe received' && r.probeId === sent.id, 10_000, marks[i])));
      row.oneMessageMs.push(Math.max(...seen.map((r) => Number(r.receivedAtMs))) - sent.sentAtMs);
    };
    for (let p = 0; p < Number(opts.probes); p++) await probe(p);
    process.stderr.write(`  N=${n}: one gossip message p50 ${median(row.oneMessageMs).toFixed(2)} ms\n`);
    const timed = async (node: ProcNode, command: string, state: string): Promise<number> => {
      await probe(row.oneMessageMs.length);
      return transition(cluster, node, command, state);
    };

    for (let t = 0; t < trials; t++) {
      const at = (k: number) => cluster.nodes[(t + k) % n]!;
      row.times['PAUSE idle'].push(await timed(at(0), 'pause', 'PAUSED'));
      row.times.UNPAUSE.push(await timed(at(1), 'unpause', 'RUNNING'));
      // Under load: every rank has requests in flight and queued while it drains.
      load = startLoad(cluster.nodes, 2);
      const flowing = load;
      await until('load flowing', () => flowing.completed >= n * 2, 30_000);
      row.times['PAUSE load'].push(await timed(at(2), 'pause', 'PAUSED'));
      row.times.SUSPEND.push(await timed(at(3), 'suspend', 'SUSPENDED'));
      row.times.RESUME.push(await timed(at(0), 'resume', 'PAUSED'));
      await transition(cluster, at(1), 'unpause', 'RUNNING');
      await load.stop();
      if (load.failed > 0) throw new Error(`${load.failed} requests failed under load (${load.lastError})`);
      load = undefined;
      process.stderr.write(`  N=${n} trial ${t + 1}: ${kinds.filter((k) => k !== 'STOP').map((k) => `${k} ${row.times[k].at(-1)!.toFixed(1)} ms`).join(', ')}\n`);
    }
    // STOP ends the mesh, so it is timed once per size.
    await transition(cluster, cluster.nodes[0]!, 'pause', 'PAUSED');
    row.times.STOP.push(await timed(cluster.nodes[1]!, 'stop', 'STOPPED'));
    row.exitCodes = await Promise.all(cluster.nodes.map((x) => x.process.exited));
  } catch (err) {
    row.failure = (err as Error).message;
    process.stderr.write(`  N=${n}: ${row.failure}\n`);
  } finally {
    await load?.stop();
    await cluster.stop();
  }
}

console.log('\nLifecycle transitions: HTTP request at one node → every node in the target state (p50 / p90 ms; ratio = p50 / one-message p50)');
console.log(`| nodes | one gossip message | ${kinds.join(' | ')} | exit codes after STOP |`);
console.log(`|---|---|${kinds.map(() => '---').join('|')}|---|`);
for (const row of rows) {
  const one = median(row.oneMessageMs);
  const cells = kinds.map((k) => (row.times[k].length === 0 ? 'n/a' : `${median(row.times[k]).toFixed(1)} / ${pct(row.times[k], 0.9).toFixed(1)} (${(median(row.times[k]) / one).toFixed(1)}×)`));
  const exits = row.exitCodes.length === 0 ? 'n/a' : row.exitCodes.every((c) => c === 0) ? `all ${row.exitCodes.length} exited 0` : row.exitCodes.join(',');
  console.log(`| ${row.nodes} | ${row.oneMessageMs.length === 0 ? 'n/a' : `${one.toFixed(2)} ms`} | ${cells.join(' | ')} | ${exits}${row.failure ? ` — ${row.failure}` : ''} |`);
}
console.log('');
for (const row of rows) {
  const one = median(row.oneMessageMs);
  for (const k of kinds) {
    const name = `pause-${k.toLowerCase().replace(' ', '-')}-n${row.nodes}`;
    if (row.times[k].length === 0 || row.oneMessageMs.length === 0) {
      console.log(`bench ${name}: n/a x (target <= ${targetRatio}) short`);
      continue;
    }
    const ratio = median(row.times[k]) / one;
    console.log(`bench ${name}: ${ratio.toFixed(2)} x (target <= ${targetRatio}) ${ratio <= targetRatio ? 'ok' : 'short'}`);
  }
}

/** Issues a command at `node`; returns ms from the request to the last node's change to `state`. */
async function transition(cluster: ProcCluster, node: ProcNode, command: string, state: string): Promise<number> {
  const live = cluster.nodes.filter((x) => x.process.exitCode === null);
  const marks = live.map((x) => x.logs.length);
  const startedMs = nowMs();
  const reply = await postRaw(node, `/v1/control/${command}`, { timeoutMs: 60_000 });
  if (reply.status !== 200) throw new Error(`${command} at ${node.name}: HTTP ${reply.status} ${JSON.stringify(reply.body)}`);
  const seen = await Promise.all(live.map((x, i) => cluster.waitForLog(x, (r: LogRecord) => r.msg === 'lifecycle state changed' && r.state === state, 60_000, marks[i])));
  const doneMs = Math.max(...seen.map((r) => Number(r.atMs))) - startedMs;
  // Where the time went: the command's round (every node in the transient state), the local
  // parts (drain, offload, reload, teardown), the completing round.
  const transient = live.map((x, i) => x.logs.slice(marks[i]).find((r) => r.msg === 'lifecycle state changed' && r.state !== state));
  if (transient.every((r) => r !== undefined)) {
    const firstRoundMs = Math.max(...transient.map((r) => Number(r!.atMs))) - startedMs;
    const localRecords = live.map((x, i) => x.logs.slice(marks[i]).find((r) => r.msg === 'local part of the transition done'));
    const local = localRecords.map((r) => r?.ms).filter((m) => m !== undefined);
    const localDoneMs = localRecords.every((r) => r !== undefined) ? Math.max(...localRecords.map((r) => Number(r!.atMs))) - startedMs : null;
    process.stderr.write(
      `    ${command} at ${node.name}: every node ${String(transient[0]!.state)} after ${firstRoundMs.toFixed(1)} ms, local parts done after ${localDoneMs?.toFixed(1) ?? '?'} ms (${local.join(', ')} ms), ${state} after ${doneMs.toFixed(1)} ms\n`,
    );
  }
  return doneMs;
}

interface Load {
  completed: number;
  failed: number;
  lastError: string;
  stop(): Promise<void>;
}

/** `perNode` clients per node, each sending one request after another. */
function startLoad(nodes: readonly ProcNode[], perNode: number): Load {
  let running = true;
  const load: Load = { completed: 0, failed: 0, lastError: '', stop: async () => {} };
  const clients = nodes.flatMap((node) =>
    Array.from({ length: perNode }, async (_, c) => {
      for (let i = 0; running; i++) {
        try {
          const reply = await postRaw(node, '/v1/rank/infer', { id: `${node.name}-${c}-${i}-${Math.random().toString(36).slice(2)}`, input: [1, 2, 3, 4, 5, 6, 7, 8] });
          if (reply.status === 200) load.completed += 1;
          else {
            load.failed += 1;
            load.lastError = JSON.stringify(reply.body);
          }
        } catch (err) {
          load.failed += 1;
          load.lastError = (err as Error).message;
          await Bun.sleep(100);
        }
      }
    }),
  );
  load.stop = async () => {
    running = false;
    await Promise.all(clients);
  };
  return load;
}

async function post(node: ProcNode, path: string, body: unknown = {}): Promise<unknown> {
  const reply = await postRaw(node, path, body);
  if (reply.status !== 200) throw new Error(`${path} at ${node.name}: HTTP ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body;
}

async function postRaw(node: ProcNode, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${node.httpUrl}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

async function getJson(node: ProcNode, path: string): Promise<Record<string, unknown> | null> {
  try {
    const response = await fetch(`${node.httpUrl}${path}`);
    return response.ok ? ((await response.json()) as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

function median(xs: number[]): number {
  return pct(xs, 0.5);
}

function pct(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
