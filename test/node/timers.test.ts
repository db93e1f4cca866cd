// Covers node/timers.ts: waits spread by ±25 %, and a jittered repeat that stops when told.
import { expect, test } from 'bun:test';
import { everyJittered, jitteredMs } from '../../node/timers.ts';

test('a jittered wait stays within ±25 % of the interval', () => {
  expect(jitteredMs(1000, 0)).toBe(750);
  expect(jitteredMs(1000, 0.5)).toBe(1000);
  expect(jitteredMs(1000, 0.999)).toBeCloseTo(1249.5);
  for (let i = 0; i < 1000; i++) {
    const ms = jitteredMs(400);
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(ms).toBeLessThan(500);
  }
});

test('everyJittered repeats until stopped', async () => {
  let calls = 0;
  const timer = everyJittered(10, () => {
    calls++;
  });
  const deadline = performance.now() + 2000;
  while (calls < 5 && performance.now() < deadline) await Bun.sleep(5);
  timer.stop();
  expect(calls).toBeGreaterThanOrEqual(5);
  const stoppedAt = calls;
  await Bun.sleep(50);
  expect(calls).toBe(stoppedAt);
});
