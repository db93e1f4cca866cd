// `bun run ctl` against real in-process nodes: a command prints the state reached and exits 0,
// an illegal one prints why and what is allowed and exits 1, a missing token or an absent
// node exits 2 with a hint, and status shows the lifecycle and the view.
import { afterAll, expect, test } from 'bun:test';
import { join } from 'node:path';
import { InprocMesh } from '../../scripts/lib/inproc-mesh.ts';
import { repoRoot, tempDir, waitFor } from '../node/helpers.ts';

const meshes: InprocMesh[] = [];
afterAll(async () => {
  await Promise.all(meshes.map((m) => m.stop()));
});

/** Runs the CLI as its own process (asynchronously: the nodes it talks to live in this one). */
async function ctl(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RANKMESH_'))) as Record<string, string>;
  const child = Bun.spawn([process.execPath, join(repoRoot, 'scripts/ctl.ts'), ...args], { env: { ...clean, ...env }, cwd: tempDir('rankmesh-ctl-').path, stdout: 'pipe', stderr: 'pipe' });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { code, out, err };
}

test('ctl: commands, refusals, status, and clear usage errors', async () => {
  const mesh = await InprocMesh.start({ nodes: 2 });
  meshes.push(mesh);
  await waitFor('both ranks serving', () => mesh.nodes.every((n) => n.runtime.rank.rankStatus().serving), 30_000);
  const node = ['--node', mesh.nodes[1]!.httpUrl];
  const auth = ['--token', 'inproc-test-token'];

  const paused = await ctl(['pause', ...node, ...auth]);
  expect(paused.code).toBe(0);
  expect(paused.out).toMatch(/^PAUSE: PAUSED in \d+ ms/);

  const refused = await ctl(['resume', ...node, ...auth]);
  expect(refused.code).toBe(1);
  expect(refused.err).toContain('RESUME refused');
  expect(refused.err).toContain('allowed: pause, unpause, suspend, stop');

  const status = await ctl(['status', ...node]);
  expect(status.code).toBe(0);
  expect(status.out).toContain('lifecycle  PAUSED');
  expect(status.out).toContain('2/2 ranks active');

  expect((await ctl(['unpause', ...node], { RANKMESH_TOKEN: 'inproc-test-token' })).out).toMatch(/^UNPAUSE: RUNNING/);
  const transitions = await ctl(['lifecycle', ...node]);
  expect(transitions.out).toContain('state RUNNING');
  expect(transitions.out).toMatch(/PAUSED .* after \d+ ms in PAUSING/);

  const noToken = await ctl(['pause', ...node]);
  expect(noToken.code).toBe(2);
  expect(noToken.err).toContain('no token');
  const wrongToken = await ctl(['pause', ...node, '--token', 'wrong']);
  expect(wrongToken.code).toBe(2);
  expect(wrongToken.err).toContain('401');
  const nobody = await ctl(['status', '--node', 'http://127.0.0.1:9']);
  expect(nobody.code).toBe(2);
  expect(nobody.err).toContain('no answer from http://127.0.0.1:9');
  expect(mesh.nodes.every((n) => n.runtime.driver.core.lifecycleState() === 'RUNNING')).toBe(true);
}, 60_000);
