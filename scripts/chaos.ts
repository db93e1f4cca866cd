// `bun scripts/chaos.ts [--seed N] [--minutes M] [--nodes N] [--world-size W] [--only TEXT]`: the long
// real-process chaos run. Node processes run in their own network namespaces (needs root and
// iproute2; nftables for the loss scenarios), requests flow through every reachable node, and
// every scenario of test/chaos/scenarios.ts runs at least once — then more, in an order drawn
// from the seed, until the time is up — and a STOP during a partition ends the run. Every
// scenario is audited on what the nodes recorded; the table at the end is the README's.
// Exit code: 0 with no invariant violation, 1 otherwise, 2 when it cannot run here.
import { Command, InvalidArgumentError } from 'commander';
import { NetnsLab, netnsUnavailableReason, nftUnavailableReason } from './lib/netns.ts';
import { exitViolations, type Violation } from '../test/chaos/accounting.ts';
import type { LoadDoor } from '../test/chaos/load.ts';
import { chaosNodeSettings, NsCluster } from '../test/chaos/ns-cluster.ts';
import { type ChaosEnv, NoConvergenceError, type ScenarioName, type ScenarioReport, scenarios, seededRandom, stopDuringPartition, waitConverged } from '../test/chaos/scenarios.ts';

const options = new Command('chaos')
  .description('Runs the real-process partition suite in network namespaces and prints its table')
  .option('--seed <n>', 'seed of every choice (which nodes, which scenario next)', integer, Date.now() % 1_000_000)
  .option('--minutes <m>', 'keep drawing scenarios until this much time has passed', Number, 5)
  .option('--nodes <n>', 'node processes (more than --world-size: the rest are hot spares)', integer, 6)
  .option('--world-size <n>', 'ranks of the mesh', integer, 5)
  .option('--heal-after-grace', 'end with a STOP whose partition heals only after the majority has been closed for longer than closedGraceMs; it must still be there, waiting for the minority (default: heal at once)')
  .option('--door <door>', 'where requests enter: generate (the edge, POST /v1/generate) or rank (POST /v1/rank/infer)', 'generate')
  .option('--only <text>', 'run only the scenarios whose name contains this text (the closing STOP during a partition too, only if it matches)')
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ seed: number; minutes: number; nodes: number; worldSize: number; door: string; healAfterGrace?: boolean; only?: string }>();
const healWithinGrace = options.healAfterGrace !== true;
if (options.door !== 'generate' && options.door !== 'rank') {
  process.stderr.write(`chaos: --door must be generate or rank, got ${options.door}\n`);
  process.exit(2);
}
const door: LoadDoor = options.door;

const print = (line: string): void => void process.stdout.write(`${line}\n`);
print(`chaos: seed ${options.seed} (--seed ${options.seed} replays the same choices), ${options.minutes} min, ${options.nodes} nodes, world size ${options.worldSize}, requests through ${door}`);

const unavailable = netnsUnavailableReason();
if (unavailable !== undefined) {
  print(`chaos: cannot run: ${unavailable}`);
  process.exit(2);
}
const nftMissing = nftUnavailableReason();
if (nftMissing !== undefined) print(`chaos: loss scenarios left out: ${nftMissing}`);

const ingressRequestTimeoutMs = 30_000;
const lab = NetnsLab.create({ hosts: options.nodes });
const stopSignals = (): void => {
  lab.destroy();
  process.exit(130);
};
process.once('SIGINT', stopSignals);
process.once('SIGTERM', stopSignals);

const cluster = await NsCluster.start({ lab, nodes: options.nodes, worldSize: options.worldSize, env: chaosNodeSettings(ingressRequestTimeoutMs) });
const random = seededRandom(options.seed);
const env: ChaosEnv = {
  lab,
  cluster,
  worldSize: options.worldSize,
  random,
  log: (line) => print(`chaos: ${line}`),
  holdMs: 3000,
  reactMs: 45_000,
  ingressRequestTimeoutMs,
  door,
};

const reports: ScenarioReport[] = [];
try {
  await waitConverged(env, 120_000);
  const names = (Object.keys(scenarios) as ScenarioName[]).filter((n) => {
    if (options.only !== undefined && !n.includes(options.only)) return false;
    if (n.startsWith('one-way loss') && nftMissing !== undefined) return false;
    return !(n.includes('spare') && options.nodes <= options.worldSize);
  });
  if (names.length === 0) print(`chaos: no scenario name contains ${JSON.stringify(options.only)}`);
  const deadline = names.length === 0 ? 0 : performance.now() + options.minutes * 60_000;
  const queue = shuffle(names);
  let recovered = true;
  while (queue.length > 0 || performance.now() < deadline) {
    const name = queue.shift() ?? names[Math.floor(random() * names.length)]!;
    reports.push(await scenarios[name](env));
    // A mesh that did not come back cannot host the next scenario fairly: end here.
    if (reports.at(-1)!.violations.some((v) => v.invariant === 'liveness') && !(await settles(env))) {
      print(`chaos: the mesh did not recover; ending the run early (not run: ${queue.join(', ') || 'nothing'}, STOP during a partition)`);
      recovered = false;
      break;
    }
  }
  const stopName = healWithinGrace ? 'STOP during a partition, healed at once' : 'STOP during a partition, healed after the grace period';
  if (recovered && (options.only === undefined || stopName.includes(options.only))) reports.push(await stopDuringPartition(env, { healWithinGrace }));
} finally {
  await cluster.stop();
  lab.destroy();
}
const exits = exitViolations(cluster);
cluster.removeFiles();

printTable(reports, exits);
const violations = reports.reduce((n, r) => n + r.violations.length, 0) + exits.length;
process.exit(violations === 0 ? 0 : 1);

function printTable(list: readonly ScenarioReport[], exitProblems: readonly Violation[]): void {
  const rows = new Map<string, { runs: number; faults: number; sent: number; accepted: number; completed: number; failed: number; lost: number; violations: number }>();
  for (const r of list) {
    const row = rows.get(r.name) ?? { runs: 0, faults: 0, sent: 0, accepted: 0, completed: 0, failed: 0, lost: 0, violations: 0 };
    row.runs += 1;
    row.faults += r.faults;
    row.sent += r.requests.sent;
    row.accepted += r.requests.accepted;
    row.completed += r.requests.completed;
    row.failed += r.requests.failed;
    row.lost += r.requests.lost;
    row.violations += r.violations.length;
    rows.set(r.name, row);
  }
  const total = { runs: 0, faults: 0, sent: 0, accepted: 0, completed: 0, failed: 0, lost: 0, violations: exitProblems.length };
  print('');
  print('| scenario | runs | faults injected | requests sent | accepted | completed | reported failed | lost | invariant violations |');
  print('|---|---|---|---|---|---|---|---|---|');
  for (const [name, row] of rows) {
    print(`| ${name} | ${row.runs} | ${row.faults} | ${row.sent} | ${row.accepted} | ${row.completed} | ${row.failed} | ${row.lost} | ${row.violations} |`);
    for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += row[key];
  }
  print(`| **all** | ${total.runs} | ${total.faults} | ${total.sent} | ${total.accepted} | ${total.completed} | ${total.failed} | ${total.lost} | ${total.violations} |`);
  print('');
  for (const r of list) for (const v of r.violations) print(`violation in "${r.name}": ${v.invariant}: ${v.detail}`);
  for (const v of exitProblems) print(`violation at exit: ${v.invariant}: ${v.detail}`);
  print(`chaos: ${total.runs} scenario runs, ${total.faults} faults, ${total.accepted} requests accepted, ${total.completed} completed, ${total.lost} lost, ${total.violations} invariant violations (seed ${options.seed})`);
}

/** Whether the mesh settles on one full view again (after a scenario that missed a deadline). */
async function settles(chaos: ChaosEnv): Promise<boolean> {
  try {
    await waitConverged(chaos);
    return true;
  } catch (err) {
    if (err instanceof NoConvergenceError) return false;
    throw err;
  }
}

function shuffle<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function integer(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
}
