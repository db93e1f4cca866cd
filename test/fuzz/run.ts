// Runs one fuzz target with fast-check and reports what happened: cases tried, inputs taken,
// inputs refused by reason, and the first failure with the seed and path that replay it.
// The property, for every input: feeding it never throws; a refusal carries a reason (and is
// counted where the component counts); a refused input leaves the component's state as it was.
import fc from 'fast-check';
import type { FuzzTarget, Harness, Outcome } from './targets.ts';

export interface FuzzOptions {
  cases: number;
  /** fast-check seed; a fresh one when absent. */
  seed?: number;
  /** A counterexample path from an earlier failure: replays just that case. */
  path?: string;
}

export interface FuzzReport {
  readonly name: string;
  readonly seed: number;
  /** Cases tried, shrinking included. */
  readonly cases: number;
  readonly accepted: number;
  readonly refused: number;
  /** Refusals by reason, the reason cut to its first 60 characters. */
  readonly reasons: ReadonlyMap<string, number>;
  readonly failure: { message: string; path: string; input: string } | null;
  readonly ms: number;
}

export async function fuzz<I>(target: FuzzTarget<I>, options: FuzzOptions): Promise<FuzzReport> {
  const started = performance.now();
  const seed = options.seed ?? (Date.now() ^ (performance.now() * 1000)) >>> 0;
  const harness = await target.open();
  let cases = 0;
  let accepted = 0;
  let refused = 0;
  const reasons = new Map<string, number>();
  try {
    const property = fc.asyncProperty(target.input, async (input) => {
      cases++;
      const outcome = await feedOnce(harness, input);
      if (outcome.accepted) {
        accepted++;
        return;
      }
      refused++;
      const key = outcome.reason.slice(0, 60);
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    });
    const details = await fc.check(property, { numRuns: options.cases, seed, ...(options.path !== undefined ? { path: options.path } : {}) });
    const failure = details.failed
      ? { message: String((details.errorInstance as Error | undefined)?.message ?? details.errorInstance), path: details.counterexamplePath ?? '', input: describeInput(details.counterexample?.[0]) }
      : null;
    return { name: target.name, seed, cases, accepted, refused, reasons, failure, ms: performance.now() - started };
  } finally {
    await harness.close?.();
  }
}

/** One input through the harness, checked; throws a sentence saying what went wrong. */
async function feedOnce<I>(harness: Harness<I>, input: I): Promise<Outcome> {
  await harness.prepare?.();
  const before = await harness.state();
  const livenessBefore = await harness.liveness?.();
  let outcome: Outcome;
  try {
    outcome = await harness.feed(input);
  } catch (err) {
    throw new Error(`the input made it throw ${(err as Error)?.name ?? 'a value'}: ${(err as Error)?.message ?? String(err)}`);
  }
  if (outcome.accepted) return outcome;
  if (typeof outcome.reason !== 'string' || outcome.reason.trim() === '') throw new Error('an input was refused without a reason');
  if (outcome.counted === false) throw new Error(`a refusal was not counted (${outcome.reason})`);
  if (!Bun.deepEquals(await harness.state(), before)) throw new Error(`a refused input changed state (${outcome.reason})`);
  if (!outcome.livenessOnly && harness.liveness && !Bun.deepEquals(await harness.liveness(), livenessBefore)) {
    throw new Error(`a refused input changed what the node heard (${outcome.reason})`);
  }
  return outcome;
}

function describeInput(input: unknown): string {
  if (input instanceof Uint8Array) {
    const text = new TextDecoder('utf-8', { fatal: false }).decode(input);
    return `${input.byteLength} bytes: ${JSON.stringify(text.slice(0, 300))}`;
  }
  return JSON.stringify(input, (_k, v) => (v instanceof Uint8Array ? new TextDecoder().decode(v) : v))?.slice(0, 400) ?? String(input);
}

/** The report as table rows and, on failure, how to replay it. */
export function formatReport(r: FuzzReport): string {
  const top = [...r.reasons.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, n]) => `${n}× ${k}`).join('; ');
  const line = `${r.name.padEnd(48)} ${String(r.cases).padStart(7)} cases  ${String(r.accepted).padStart(6)} taken  ${String(r.refused).padStart(7)} refused  ${r.failure ? 'FAIL' : 'ok  '}  ${(r.ms / 1000).toFixed(1)} s  ${top}`;
  if (!r.failure) return line;
  return `${line}\n  failure: ${r.failure.message}\n  input: ${r.failure.input}\n  replay: bun scripts/fuzz.ts --target ${JSON.stringify(r.name)} --seed ${r.seed} --path ${JSON.stringify(r.failure.path)}`;
}
