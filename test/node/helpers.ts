// Shared helpers of the node tests: temporary directories, bounded waits on a condition, and
// node processes started the way an operator starts them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const repoRoot = resolve(import.meta.dir, '../..');
export const mainPath = join(repoRoot, 'node/main.ts');

/** A fresh directory under the OS temp dir; remove() deletes it. */
export function tempDir(prefix = 'rankmesh-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Whether a process with this pid is running (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once `condition()` is true; rejects with `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(10);
  }
}

export interface NodeProcess {
  process: ReturnType<typeof Bun.spawn>;
  /** Every line the process printed so far (stdout and stderr). */
  lines: string[];
  /** Resolves with the HTTP URL once the node logs that it serves, or rejects if it exits first. */
  serving: Promise<string>;
}

/** Starts `bun node/main.ts` with these flags; port 0 everywhere unless the flags say otherwise. */
export function spawnNode(dataDir: string, flags: string[] = [], env: Record<string, string> = {}): NodeProcess {
  const child = Bun.spawn(
    [process.execPath, mainPath, '--data-dir', dataDir, '--http-addr', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', ...flags],
    { cwd: repoRoot, env: { ...process.env, ...env }, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' },
  );
  const lines: string[] = [];
  const { promise: serving, resolve: resolveServing, reject } = Promise.withResolvers<string>();
  const collect = async (stream: ReadableStream<Uint8Array>): Promise<void> => {
    const decoder = new TextDecoder();
    let pending = '';
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        const http = /"http":"(http:\/\/[^"]+)"/.exec(line)?.[1];
        if (http !== undefined) resolveServing(http);
      }
    }
    if (pending !== '') lines.push(pending);
  };
  void Promise.all([collect(child.stdout as ReadableStream<Uint8Array>), collect(child.stderr as ReadableStream<Uint8Array>)]).then(() =>
    reject(new Error(`node exited before serving:\n${lines.join('\n')}`)),
  );
  serving.catch(() => undefined);
  return { process: child, lines, serving };
}
