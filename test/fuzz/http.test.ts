// Every HTTP route that takes a body, on a real node over real HTTP, fuzzed with arbitrary and near-valid bodies: no 500, no unanswered request, no internals in a response, every refusal a JSON 4xx with a code and message that leaves the node's state as it was.
import { expect, test } from 'bun:test';
import { httpTarget } from './http.ts';
import { formatReport, fuzz } from './run.ts';

const cases = Number(process.env.FUZZ_HTTP_CASES ?? 400);
const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : undefined;

test('fuzz: HTTP bodies on a real node', async () => {
  const report = await fuzz(httpTarget(), { cases, ...(seed !== undefined ? { seed } : {}) });
  console.log(formatReport(report));
  expect(report.failure).toBeNull();
  expect(report.refused).toBeGreaterThan(cases / 4);
  expect(report.accepted).toBeGreaterThan(0);
}, 90_000);
