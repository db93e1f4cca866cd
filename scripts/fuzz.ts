// The fuzz campaign: the properties of test/fuzz at many more cases. Every wire decoder and
// every HTTP route that takes a body (on a real node) gets `--cases` inputs; a table shows
// cases tried, taken and refused per target, and a failure prints its seed and path:
//
//   bun scripts/fuzz.ts --cases 100000
//   bun scripts/fuzz.ts --target "core message → RawNode" --seed 123 --path "4:1:0"
//
// Exit status 1 when any target failed.
import { Command } from 'commander';
import { httpTarget } from '../test/fuzz/http.ts';
import { formatReport, fuzz, type FuzzReport } from '../test/fuzz/run.ts';
import { decoderTargets, type FuzzTarget } from '../test/fuzz/targets.ts';

const program = new Command()
  .name('fuzz')
  .option('--cases <n>', 'inputs per target', (v) => positive(v, '--cases'), 100_000)
  .option('--http-cases <n>', 'inputs for the HTTP target (default: --cases)', (v) => positive(v, '--http-cases'))
  .option('--target <name>', 'run only the target with this name (see the table)')
  .option('--seed <n>', 'fast-check seed (replay)', (v) => positive(v, '--seed'))
  .option('--path <path>', 'counterexample path printed by a failure (replay; needs --seed)')
  .parse();
const options = program.opts<{ cases: number; httpCases?: number; target?: string; seed?: number; path?: string }>();

const targets: { target: FuzzTarget<never>; cases: number }[] = [
  ...decoderTargets.map((target) => ({ target: target as FuzzTarget<never>, cases: options.cases })),
  { target: httpTarget() as FuzzTarget<never>, cases: options.httpCases ?? options.cases },
].filter(({ target }) => options.target === undefined || target.name === options.target);
if (targets.length === 0) {
  console.error(`no target named ${JSON.stringify(options.target)}; targets: ${[...decoderTargets.map((t) => t.name), httpTarget().name].join(', ')}`);
  process.exit(2);
}

const started = performance.now();
const reports: FuzzReport[] = [];
console.log(`fuzz: ${targets.length} targets${options.seed !== undefined ? `, seed ${options.seed}` : ''}`);
for (const { target, cases } of targets) {
  const report = await fuzz(target, { cases, ...(options.seed !== undefined ? { seed: options.seed } : {}), ...(options.path !== undefined ? { path: options.path } : {}) });
  reports.push(report);
  console.log(formatReport(report));
}
const tried = reports.reduce((s, r) => s + r.cases, 0);
const failed = reports.filter((r) => r.failure !== null);
console.log(`\nfuzz: ${tried} cases tried over ${reports.length} targets in ${((performance.now() - started) / 1000).toFixed(0)} s; ${failed.length} failed${failed.length > 0 ? `: ${failed.map((r) => r.name).join(', ')}` : ''}`);
process.exit(failed.length > 0 ? 1 : 0);

function positive(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`${flag} must be a non-negative integer, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return n;
}
