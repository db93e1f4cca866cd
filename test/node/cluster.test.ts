// Covers scripts/cluster.ts: two nodes that see each other, RANKMESH_TOKEN and the co-located
// allocator setting passed to every node, and no node outliving the script even when it is
// killed with SIGKILL.
import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { colocatedEnv } from '../../scripts/lib/colocated-env.ts';
import { freePort, isPortFree } from '../../scripts/lib/ports.ts';
import { processAlive as alive, repoRoot, tempDir, waitFor } from './helpers.ts';

const dir = tempDir();
afterAll(() => dir.remove());

/** The first of `count` consecutive free ports. */
async function freeRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const first = await freePort();
    if (first + count > 65535) continue;
    let free = true;
    for (let port = first + 1; port < first + count && free; port++) free = await isPortFree(port);
    if (free) return first;
  }
  throw new Error('no run of free ports found in 100 attempts');
}

describe('cluster script', () => {
  test('starts connected nodes with the shared token; its nodes die with it', async () => {
    const httpPort = await freeRun(4);
    const p2pPort = httpPort + 2;
    const env: Record<string, string | undefined> = { ...process.env, RANKMESH_TOKEN: 'cluster-secret' };
    delete env.MIMALLOC_PURGE_DELAY;
    const script = Bun.spawn(
      [process.execPath, join(repoRoot, 'scripts/cluster.ts'), '--nodes', '2', '--dir', dir.path, '--http-port', String(httpPort), '--p2p-port', String(p2pPort)],
      { cwd: repoRoot, env, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' },
    );
    let output = '';
    const reading = (async () => {
      for await (const chunk of script.stdout as ReadableStream<Uint8Array>) output += new TextDecoder().decode(chunk);
    })();
    try {
      await waitFor('both nodes connected', () => output.includes('cluster: 2 nodes up and connected'), 20_000);
      const pids = [...output.matchAll(/^node-\d+ {2}http:\/\/127\.0\.0\.1:(\d+) {2}pid (\d+)/gm)].map((m) => Number(m[2]));
      expect(pids.length).toBe(2);
      if (existsSync('/proc/self/environ')) {
        for (const pid of pids) expect(readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')).toContain('MIMALLOC_PURGE_DELAY=-1');
      }
      const url = `http://127.0.0.1:${httpPort}`;
      const guarded = await fetch(`${url}/v1/anything`, { method: 'POST', headers: { authorization: 'Bearer cluster-secret' } });
      expect(guarded.status).toBe(404);
      expect(output).toMatch(/\[node-1\] INFO peer connected/);

      script.kill('SIGKILL');
      await script.exited;
      await waitFor('every node exited after the script was killed', () => pids.every((pid) => !alive(pid)), 10_000);
    } finally {
      script.kill('SIGKILL');
      await reading.catch(() => undefined);
    }
  }, 40_000);
});

describe('colocatedEnv', () => {
  test('fills in the co-located defaults and keeps what the environment already sets', () => {
    expect(colocatedEnv({ PATH: '/bin' })).toEqual({ PATH: '/bin', MIMALLOC_PURGE_DELAY: '-1' });
    expect(colocatedEnv({ MIMALLOC_PURGE_DELAY: '10' }).MIMALLOC_PURGE_DELAY).toBe('10');
  });
});
