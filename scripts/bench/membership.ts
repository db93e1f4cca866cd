// Membership benchmark. Three measurements, each on real nodes:
//  1. failure detection: kill -9 (or SIGSTOP: a silent hang) one node of N separate node
//     processes and time until every survivor has committed the view without it (by the
//     survivors' own log timestamps); the node is restarted between trials and rejoins. Every
//     measurement starts from a settled mesh: every rank serving (its ring built), then a pause
//     until the idle load stops falling (restarted processes done compiling, rings built).
//  2. false suspicions: N node processes idle for a while beside a CPU hog that keeps both
//     cores busy; every suspicion and every view change counts as false (nobody failed).
//  3. first-view formation for many in-process nodes (one process, one event loop).
// Usage: bun scripts/bench/membership.ts [--sizes 8,32] [--trials 5] [--hog-seconds 300]
//        [--hog-nodes 8] [--form-sizes 64,128]
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { InprocMesh } from '../lib/inproc-mesh.ts';
import { getJson, ProcCluster, type LogRecord, type ProcNode } from '../lib/proc-cluster.ts';

const opts = new Command('membership')
  .option('--sizes <list>', 'cluster sizes for failure detection', '8,32')
  .option('--trials <n>', 'kills per size', '5')
  .option('--hog-seconds <s>', 'length of the CPU-hog run', '300')
  .option('--hog-nodes <n>', 'nodes in the CPU-hog run', '8')
  .option('--form-sizes <list>', 'in-process node counts for first-view formation', '64,128')
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ sizes: string; trials: string; hogSeconds: string; hogNodes: string; formSizes: string }>();

/** Peers each in-process node keeps connected in the formation measurement. */
const formPeerConnections = 8;
const list = (s: string): number[] => s.split(',').filter(Boolean).map(Number);
const detectTargetS = 1.0;
const maskOf = (r: LogRecord): bigint => BigInt(`0x${String(r.mask)}`);
/** A committed view in which `rank` is empty. */
const without = (rank: number) => (r: LogRecord) => r.msg === 'view committed' && ((maskOf(r) >> BigInt(rank)) & 1n) === 0n;
/** A committed view with every one of `n` ranks active. */
const full = (n: number) => (r: LogRecord) => r.msg === 'view committed' && maskOf(r) === (1n << BigInt(n)) - 1n;

interface DetectRow { nodes: number; mode: 'kill' | 'hang'; trials: number[]; failure?: string }
const detectRows: DetectRow[] = [];
/** Per size: time to the first full view, and the CPU the idle mesh then uses (all nodes together). */
const idleRows: { nodes: number; formS: number; servingS: number | null; idleCores: number | null }[] = [];

/** Pause after every rank serves, before a measurement: ring builds and plan rounds settle. */
const SETTLE_MS = 10_000;
/** Longest wait for a mesh's idle load to stop falling (see settle). */
const SETTLE_MAX_MS = 90_000;
/**
 * Youngest node process a measurement starts beside. A Bun process still compiles its hot code
 * for about a minute after it starts (an idle N=32 node's JIT threads: 4.2 ms of CPU a second
 * 40 s after formation, 0.1 ms after 70 s), and a restarted victim is the slowest survivor of
 * the next kill while it does.
 */
const SETTLE_PROCESS_AGE_MS = 60_000;

/**
 * Waits until every node's rank serves (GET /v1/rank phase "serving"): after a view change the
 * ranks build their rings and pass the join step, which on one small host takes longer than
 * the view change itself. Returns the seconds it took, or null if not within `timeoutMs`.
 */
async function allServing(nodes: readonly ProcNode[], timeoutMs: number): Promise<number | null> {
  const startedAtMs = Date.now();
  while (Date.now() - startedAtMs < timeoutMs) {
    const phases = await Promise.all(nodes.map((node) => getJson<{ phase: string }>(node, '/v1/rank')));
    if (phases.every((p) => p?.phase === 'serving')) return (Date.now() - startedAtMs) / 1000;
    await Bun.sleep(500);
  }
  return null;
}

/** CPU seconds (user + system) a process has used so far, from /proc; null where unreadable. */
function cpuSeconds(pid: number): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

/** Cores the nodes use together over `seconds` of wall time. */
async function idleCores(nodes: readonly ProcNode[], seconds: number): Promise<number | null> {
  const before = nodes.map((n) => cpuSeconds(n.process.pid));
  const startedAtMs = Date.now();
  await Bun.sleep(seconds * 1000);
  const after = nodes.map((n) => cpuSeconds(n.process.pid));
  if (before.some((x) => x === null) || after.some((x) => x === null)) return null;
  const used = after.reduce((sum, a, i) => sum! + a! - before[i]!, 0)!;
  return used / ((Date.now() - startedAtMs) / 1000);
}

/**
 * Waits until the mesh idles at a steady load, then returns that load (cores, all nodes
 * together). A node process started a minute ago still compiles its code (Bun's JIT threads)
 * and the rings and plan rounds of the last view change are still settling; a kill measured
 * beside that load measures the warm-up as much as the protocol. After SETTLE_MS, and once the
 * youngest process is SETTLE_PROCESS_AGE_MS old, the idle
 * load is measured over 5 s windows until a window is not clearly below the one before
 * (within 10 % or 0.05 cores), at most SETTLE_MAX_MS.
 */
async function settle(nodes: readonly ProcNode[], youngestSpawnedAtMs: number): Promise<{ cores: number | null; waitedS: number }> {
  const startedAtMs = Date.now();
  await Bun.sleep(Math.max(SETTLE_MS, youngestSpawnedAtMs + SETTLE_PROCESS_AGE_MS - Date.now()));
  let previous = await idleCores(nodes, 5);
  while (previous !== null && Date.now() - startedAtMs < SETTLE_MAX_MS) {
    const cores = await idleCores(nodes, 5);
    if (cores === null) return { cores, waitedS: (Date.now() - startedAtMs) / 1000 };
    const falling = cores < previous * 0.9 && previous - cores > 0.05;
    previous = cores;
    if (!falling) break;
  }
  return { cores: previous, waitedS: (Date.now() - startedAtMs) / 1000 };
}

for (const n of list(opts.sizes)) {
  process.stderr.write(`detection: starting ${n} node processes\n`);
  const cluster = await ProcCluster.start({ nodes: n });
  let mode: 'kill' | 'hang' = 'kill';
  let trials: number[] = [];
  try {
    // Formation on one 2-core machine is bounded by the N·(N−1) connection handshakes of a
    // fully connected mesh, not by the protocol: give large N the time it needs.
    const formStartedAtMs = Date.now();
    await Promise.all(cluster.nodes.map((node) => cluster.waitForLog(node, full(n), 300_000)));
    const formS = (Date.now() - formStartedAtMs) / 1000;
    process.stderr.write(`  N=${n}: first view at every node after ${formS.toFixed(1)} s (processes)\n`);
    const servingS = await allServing(cluster.nodes, 180_000);
    process.stderr.write(`  N=${n}: every rank serving ${servingS === null ? 'not within 180 s' : `${servingS.toFixed(1)} s later`}\n`);
    // What the idle mesh costs once settled: the load every later measurement runs beside.
    const { cores, waitedS } = await settle(cluster.nodes, formStartedAtMs);
    idleRows.push({ nodes: n, formS, servingS, idleCores: cores });
    process.stderr.write(`  N=${n}: idle mesh uses ${cores === null ? '?' : cores.toFixed(2)} cores (steady ${waitedS.toFixed(0)} s after every rank served)\n`);
    // kill: kill -9, the kernel closes the victim's sockets (a crashed process).
    // hang: SIGSTOP, nothing is closed (a hung or powered-off host): found by silence alone.
    for (mode of ['kill', 'hang'] as const) {
      trials = [];
      for (let t = 0; t < Number(opts.trials); t++) {
        const victim = cluster.nodes[(t * 7 + 1) % n]!;
        const survivors = cluster.nodes.filter((x) => x !== victim);
        const rank = await rankOf(survivors[0]!, victim.peerId);
        const marks = new Map(survivors.map((s) => [s, s.logs.length]));
        const killedAtMs = Date.now();
        victim.process.kill(mode === 'kill' ? 'SIGKILL' : 'SIGSTOP');
        const seen = await Promise.all(survivors.map((s) => cluster.waitForLog(s, without(rank), 60_000, marks.get(s))));
        const detectS = (Math.max(...seen.map((r) => r.time)) - killedAtMs) / 1000;
        trials.push(detectS);
        // Where the time went, at the survivors: first suspicion, first failed probe, commit.
        const firstAfter = (msg: string): number => {
          const times = survivors.flatMap((s) => s.logs.slice(marks.get(s)).filter((r) => r.msg === msg && r.peer === victim.peerId).map((r) => r.time));
          return times.length === 0 ? NaN : Math.min(...times) - killedAtMs;
        };
        const firstCommitMs = Math.min(...seen.map((r) => r.time)) - killedAtMs;
        process.stderr.write(
          `  N=${n} ${mode} ${t + 1}: every survivor without ${victim.name} after ${detectS.toFixed(3)} s ` +
            `(first suspicion ${firstAfter('peer suspected; probing it directly')} ms, first failed probe ${firstAfter('probe failed')} ms, first commit ${firstCommitMs} ms)\n`,
        );
        victim.process.kill('SIGKILL');
        await victim.process.exited;
        // Bring it back: the restarted incarnation is admitted in a later view.
        await restartAndRejoin(cluster, victim, n);
      }
      detectRows.push({ nodes: n, mode, trials });
    }
  } catch (err) {
    // A size that does not converge is a result too: report it rather than lose the others.
    const failure = (err as Error).message;
    process.stderr.write(`  N=${n} ${mode}: ${failure}\n`);
    detectRows.push({ nodes: n, mode, trials, failure });
  } finally {
    await cluster.stop();
  }
}

async function restartAndRejoin(cluster: ProcCluster, node: ProcNode, n: number): Promise<void> {
  const marks = new Map(cluster.nodes.map((s) => [s, s === node ? 0 : s.logs.length]));
  const spawnedAtMs = Date.now();
  cluster.spawn(node);
  await Promise.all(cluster.nodes.map((s) => cluster.waitForLog(s, full(n), 60_000, marks.get(s))));
  if ((await allServing(cluster.nodes, 120_000)) === null) throw new Error(`after ${node.name} rejoined, not every rank served within 120 s`);
  const { cores, waitedS } = await settle(cluster.nodes, spawnedAtMs);
  process.stderr.write(`  N=${n}: ${node.name} rejoined; idle mesh at ${cores === null ? '?' : cores.toFixed(2)} cores ${waitedS.toFixed(0)} s after every rank served\n`);
}

async function rankOf(node: ProcNode, peerId: string): Promise<number> {
  const view = (await (await fetch(`${node.httpUrl}/v1/view`)).json()) as { ranks: { rank: number; peerId: string | null }[] };
  const rank = view.ranks.find((r) => r.peerId === peerId)?.rank;
  if (rank === undefined) throw new Error(`${peerId} holds no rank in ${node.name}'s view`);
  return rank;
}

// 2. False suspicions beside a CPU hog.
const hogSeconds = Number(opts.hogSeconds);
let hogRow: { nodes: number; seconds: number; suspicions: number; viewChanges: number } | undefined;
if (hogSeconds > 0) {
  const n = Number(opts.hogNodes);
  process.stderr.write(`cpu hog: ${n} node processes, 2 busy-loop processes, ${hogSeconds} s\n`);
  const cluster = await ProcCluster.start({ nodes: n });
  const hogs: ReturnType<typeof Bun.spawn>[] = [];
  try {
    await Promise.all(cluster.nodes.map((node) => cluster.waitForLog(node, full(n), 120_000)));
    const marks = cluster.nodes.map((node) => node.logs.length);
    for (let i = 0; i < 2; i++) hogs.push(Bun.spawn([process.execPath, '-e', 'for(;;){}'], { stdout: 'ignore', stderr: 'ignore' }));
    const endAtMs = Date.now() + hogSeconds * 1000;
    while (Date.now() < endAtMs) await Bun.sleep(Math.min(1000, endAtMs - Date.now()));
    let suspicions = 0;
    let viewChanges = 0;
    cluster.nodes.forEach((node, i) => {
      for (const r of node.logs.slice(marks[i])) {
        if (r.msg === 'peer suspected; probing it directly') suspicions++;
        if (r.msg === 'view committed') viewChanges++;
      }
    });
    hogRow = { nodes: n, seconds: hogSeconds, suspicions, viewChanges };
  } finally {
    for (const hog of hogs) hog.kill('SIGKILL');
    await cluster.stop();
  }
}

// 3. First-view formation, many nodes in one process.
const formRows: { nodes: number; startS: number; formS: number | null }[] = [];
for (const n of list(opts.formSizes)) {
  process.stderr.write(`formation: ${n} in-process nodes\n`);
  const startedAtMs = performance.now();
  // One process holds every node's connections; 8 kept peers each (instead of 24) keep 128
  // nodes within what one process's noise cipher memory can hold (~4,000 connection ends).
  const mesh = await InprocMesh.start({ nodes: n, settings: { peerConnectionsTarget: formPeerConnections } });
  const upAtMs = performance.now();
  try {
    const deadline = performance.now() + 300_000;
    let formed = true;
    while (!mesh.nodes.every((node) => mesh.view(node)?.epoch === 1)) {
      if (performance.now() > deadline) {
        formed = false;
        break;
      }
      await Bun.sleep(50);
    }
    formRows.push({ nodes: n, startS: (upAtMs - startedAtMs) / 1000, formS: formed ? (performance.now() - startedAtMs) / 1000 : null });
  } finally {
    await mesh.stop();
  }
}

// Report.
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
console.log('\nfailure detection (fault → every survivor committed the view without the node)');
console.log('| nodes | fault | trials | p50 s | max s | memberlist LAN default | torchft heartbeat timeout |');
console.log('|---|---|---|---|---|---|---|');
for (const row of detectRows) {
  const fault = row.mode === 'kill' ? 'kill -9 (sockets close)' : 'SIGSTOP (silent hang)';
  const p50 = row.trials.length > 0 ? median(row.trials).toFixed(3) : '–';
  const max = row.trials.length > 0 ? Math.max(...row.trials).toFixed(3) : '–';
  const failed = row.failure === undefined ? '' : ` (then: ${row.failure})`;
  console.log(`| ${row.nodes} | ${fault}${failed} | ${row.trials.length} | ${p50} | ${max} | ~5 s or more | 5 s |`);
}
if (idleRows.length > 0) {
  console.log('\nformation and idle load (node processes on this machine)');
  console.log('| nodes | first view at every node s | then every rank serving s | idle mesh, cores (all nodes) | per node |');
  console.log('|---|---|---|---|---|');
  for (const row of idleRows) {
    const cores = row.idleCores === null ? '–' : row.idleCores.toFixed(2);
    const per = row.idleCores === null ? '–' : `${((row.idleCores / row.nodes) * 100).toFixed(1)} %`;
    const serving = row.servingS === null ? 'not within 180 s' : row.servingS.toFixed(1);
    console.log(`| ${row.nodes} | ${row.formS.toFixed(1)} | ${serving} | ${cores} | ${per} |`);
  }
}
if (hogRow) {
  console.log(`\nfalse suspicions beside a CPU hog (2 busy loops on 2 cores)`);
  console.log('| nodes | seconds | suspicions | view changes |');
  console.log('|---|---|---|---|');
  console.log(`| ${hogRow.nodes} | ${hogRow.seconds} | ${hogRow.suspicions} | ${hogRow.viewChanges} |`);
}
if (formRows.length > 0) {
  console.log(`\nfirst view, in-process nodes (one event loop; peerConnectionsTarget ${formPeerConnections}, other settings default)`);
  console.log('| nodes | all started s | all hold the first view s |');
  console.log('|---|---|---|');
  for (const row of formRows) console.log(`| ${row.nodes} | ${row.startS.toFixed(2)} | ${row.formS === null ? 'not within 300 s' : row.formS.toFixed(2)} |`);
}
console.log('');
// The target is the issue's: a killed node. A silent hang has no target; its row is above.
for (const row of detectRows.filter((r) => r.mode === 'kill')) {
  const p50 = row.trials.length > 0 && row.failure === undefined ? median(row.trials) : Number.POSITIVE_INFINITY;
  console.log(`bench membership: ${p50.toFixed(3)} s p50 kill-to-view at N=${row.nodes} (target <= ${detectTargetS}) ${p50 <= detectTargetS ? 'ok' : 'short'}`);
}
if (hogRow) {
  const falseEvents = hogRow.suspicions + hogRow.viewChanges;
  console.log(`bench membership: ${falseEvents} false suspicions in ${hogRow.seconds} s beside a CPU hog (target = 0) ${falseEvents === 0 ? 'ok' : 'short'}`);
}
