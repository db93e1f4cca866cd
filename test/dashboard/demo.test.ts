// Covers `bun run demo --no-wait` end to end: real node processes form a mesh, survive a crash
// with a deferred rejoin and a spare promotion, pause and unpause, lose no request, and exit 0.
import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { repoRoot } from '../node/helpers.ts';

test('the demo runs the whole story and exits 0 with no request lost', async () => {
  const child = Bun.spawn([process.execPath, join(repoRoot, 'scripts/demo.ts'), '--no-wait', '--warm-up-ms', '500', '--rejoin-warm-up-ms', '1500'], {
    cwd: repoRoot,
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const killer = setTimeout(() => child.kill('SIGTERM'), 100_000);
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  clearTimeout(killer);
  if (code !== 0) throw new Error(`demo exited ${code}\n${out}\n${err}`);
  for (const step of ['1. The mesh forms', '3. A rank crashes and comes back (deferred join)', '4. A hot spare takes over', '5. Pause and unpause']) expect(out).toContain(step);
  expect(out).toMatch(/admitted to rank \d+ in epoch \d+, mask 0xf/);
  expect(out).toMatch(/promoted node-4 into rank \d+/);
  expect(out).toContain('node-2 is the new ready spare');
  expect(out).toContain('mesh is PAUSED');
  expect(out).toMatch(/requests: (\d+) sent, \1 done, 0 failed/);
  expect(out).toMatch(/Dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard/);
  // Not a terminal: progress is plain lines, no redraws.
  expect(out).not.toContain('\r');
  expect(out).toMatch(/✓ node-3 warms up alone \(/);
}, 110_000);
