// scripts/gpu-check.ts as a subprocess: on a host without a driver it prints the reasons (no driver, NCCL found or not) and exits 2; on a GPU host every check must pass (exit 0, or 3 when NCCL is absent).
import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { loadCudaRuntime } from '../../ffi/cuda/runtime.ts';
import { buildFakeNccl } from './fake-nccl.ts';

const script = join(import.meta.dir, '..', '..', 'scripts', 'gpu-check.ts');
const hasGpu = (() => {
  try {
    return loadCudaRuntime().deviceCount() > 0;
  } catch {
    return false;
  }
})();

if (!hasGpu) console.log('[test/ffi] gpu-check GPU run skipped: no CUDA driver or device on this host');

function runCheck(args: string[]): { exitCode: number; out: string } {
  const env = { ...process.env, NCCL_HOME: '' };
  const res = Bun.spawnSync([process.execPath, script, ...args], { env, stdout: 'pipe', stderr: 'pipe', timeout: 120_000 });
  return { exitCode: res.exitCode ?? -1, out: res.stdout.toString() + res.stderr.toString() };
}

test.if(!hasGpu)('without a driver: exit 2 with the no-driver reason and the NCCL finding', () => {
  const fake = buildFakeNccl();
  const withNccl = runCheck(['--nccl', fake.path]);
  expect(withNccl.exitCode).toBe(2);
  expect(withNccl.out).toMatch(/devices\s+skip\s+no CUDA driver\/device: cudaGetDeviceCount failed: cudaErrorInsufficientDriver \(35\)/);
  expect(withNccl.out).toContain(`libnccl 2.30.7 found at ${fake.path}`);

  const missing = runCheck(['--nccl', '/nonexistent/libnccl.so.2']);
  expect(missing.exitCode).toBe(2);
  expect(missing.out).toContain('/nonexistent/libnccl.so.2 [explicit]: not present');
});

test.if(hasGpu)('on a GPU host every check passes', () => {
  const res = runCheck([]);
  console.log(res.out);
  expect(res.out).not.toMatch(/\sfail\s/);
  expect([0, 3]).toContain(res.exitCode);
}, 180_000);
