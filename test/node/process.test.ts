// Covers node processes as an operator runs them: a second process on the same data directory
// is refused with a clear error, a killed process's lock does not block a restart, and a node
// exits 0 promptly on SIGTERM and SIGINT.
import { afterAll, describe, expect, test } from 'bun:test';
import { spawnNode, tempDir } from './helpers.ts';

const dir = tempDir();
afterAll(() => dir.remove());

/** A clean stop is a few hundred ms; the bound leaves room for a loaded 2-core machine. */
const stopBoundMs = 5000;

async function exitWithin(child: ReturnType<typeof Bun.spawn>, boundMs: number): Promise<{ code: number | null; ms: number }> {
  const started = performance.now();
  const timer = setTimeout(() => child.kill('SIGKILL'), boundMs);
  const code = await child.exited;
  clearTimeout(timer);
  return { code, ms: performance.now() - started };
}

describe('node process', () => {
  test('a second process on the same data directory is refused, naming the directory and the pid', async () => {
    const dataDir = `${dir.path}/shared`;
    const first = spawnNode(dataDir);
    const url = await first.serving;
    const second = spawnNode(dataDir);
    const { code } = await exitWithin(second.process, 20_000);
    await second.serving.catch(() => undefined);
    expect(code).toBe(1);
    const output = second.lines.join('\n');
    expect(output).toContain(`data directory ${dataDir} is in use by another rankmesh process (pid ${first.process.pid})`);
    // The first node is unharmed and still serves.
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    first.process.kill('SIGTERM');
    expect((await exitWithin(first.process, stopBoundMs)).code).toBe(0);
  }, 30_000);

  test('a node killed with SIGKILL leaves no lock behind: the next start succeeds', async () => {
    const dataDir = `${dir.path}/crashed`;
    const crashed = spawnNode(dataDir);
    const firstUrl = await crashed.serving;
    const peerId = ((await (await fetch(`${firstUrl}/v1/status`)).json()) as { peerId: string }).peerId;
    crashed.process.kill('SIGKILL');
    await crashed.process.exited;
    const restarted = spawnNode(dataDir);
    const url = await restarted.serving;
    const status = (await (await fetch(`${url}/v1/status`)).json()) as { peerId: string; starts: number };
    expect(status.peerId).toBe(peerId);
    expect(status.starts).toBe(2);
    restarted.process.kill('SIGTERM');
    expect((await exitWithin(restarted.process, stopBoundMs)).code).toBe(0);
  }, 30_000);

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`on ${signal} a node stops and exits 0 within ${stopBoundMs} ms`, async () => {
      const node = spawnNode(`${dir.path}/${signal}`);
      const url = await node.serving;
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      node.process.kill(signal);
      const { code, ms } = await exitWithin(node.process, stopBoundMs);
      expect(code).toBe(0);
      expect(ms).toBeLessThan(stopBoundMs);
      expect(node.lines.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
    }, 30_000);
  }

  test('a bad setting stops the node with exit code 2 and a message naming it', async () => {
    const node = spawnNode(`${dir.path}/bad`, [], { RANKMESH_WORLD_SIZE: 'zero' });
    const { code } = await exitWithin(node.process, 20_000);
    await node.serving.catch(() => undefined);
    expect(code).toBe(2);
    expect(node.lines.join('\n')).toContain('setting worldSize (environment RANKMESH_WORLD_SIZE)');
  }, 30_000);
});
