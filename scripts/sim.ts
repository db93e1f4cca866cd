/**
 * Simulation campaigns: `bun run sim --seeds N [--size a-b] [--from S] [--seed S] [--wire]`.
 * Runs N seeded simulations of the mesh core and prints each failure with the command that
 * replays it. Exit status 1 when any seed fails.
 */
import { Command } from 'commander';
import { runSeed } from '../mesh/sim/run.ts';

const program = new Command()
  .name('sim')
  .option('--seeds <n>', 'number of seeds to run', '1000')
  .option('--from <seed>', 'first seed (default: drawn from the clock, printed first)')
  .option('--seed <seed>', 'replay one seed verbosely')
  .option('--size <range>', 'cluster sizes, e.g. 1-64 or 5', '1-64')
  .option('--wire', 'route every message through encode/decode')
  .parse(process.argv);
const opts = program.opts<{ seeds: string; from?: string; seed?: string; size: string; wire?: boolean }>();

const [sizeMin, sizeMax] = parseRange(opts.size);
if (opts.seed !== undefined) {
  const seed = Number(opts.seed);
  const r = runSeed({ seed, sizeMin, sizeMax, wire: opts.wire, log: (line) => console.log(line) });
  console.log(r.ok ? `seed ${seed}: ok (${r.commits} commits, converged ${r.convergeTicks} ticks after faults, ${r.commands} commands, ${r.lifecycleSteps} lifecycle steps, lifecycle ${r.lifecycleTicks} ticks)` : `seed ${seed}: FAIL ${r.failure}`);
  process.exit(r.ok ? 0 : 1);
}

const count = Number(opts.seeds);
const from = opts.from !== undefined ? Number(opts.from) : Date.now() % 1_000_000_000;
console.log(`seeds ${from}..${from + count - 1}, sizes ${sizeMin}-${sizeMax}`);
const started = performance.now();
let failures = 0;
let worstConverge = 0;
let worstLifecycle = 0;
let commands = 0;
let steps = 0;
for (let i = 0; i < count; i++) {
  const seed = from + i;
  const r = runSeed({ seed, sizeMin, sizeMax, wire: opts.wire });
  worstConverge = Math.max(worstConverge, r.convergeTicks);
  worstLifecycle = Math.max(worstLifecycle, r.lifecycleTicks);
  commands += r.commands;
  steps += r.lifecycleSteps;
  if (!r.ok) {
    failures++;
    console.log(`FAIL seed ${seed} (${r.size} nodes, worldSize ${r.worldSize}): ${r.failure}`);
    console.log(`  replay: SEED=${seed} bun test test/sim   or   bun run sim --seed ${seed} --size ${opts.size}`);
  }
  if ((i + 1) % 1000 === 0) console.log(`${i + 1}/${count} seeds, ${failures} failed, ${((performance.now() - started) / 1000).toFixed(1)} s`);
}
console.log(`${count} seeds, ${failures} failed, slowest convergence ${worstConverge} ticks, ${commands} commands issued, ${steps} lifecycle steps, slowest lifecycle settle/command ${worstLifecycle} ticks, ${((performance.now() - started) / 1000).toFixed(1)} s`);
process.exit(failures > 0 ? 1 : 0);

function parseRange(text: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text);
  if (!m) throw new Error(`--size wants a or a-b, got ${text}`);
  const a = Number(m[1]);
  const b = m[2] !== undefined ? Number(m[2]) : a;
  if (a < 1 || b > 64 || a > b) throw new Error(`--size must lie within 1-64, got ${text}`);
  return [a, b];
}
