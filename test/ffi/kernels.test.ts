// The CUDA expert kernels: moe.cu compiles with this host's nvcc (cached by source hash), the library loads and its symbols run through bun:ffi, and the CUDA ExpertBackend reports a missing driver cleanly; on a GPU host it matches the float32 CPU reference.
import { describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCudaRuntime } from '../../ffi/cuda/runtime.ts';
import { CudaError, FfiArgumentError, KernelBuildError } from '../../ffi/errors.ts';
import { buildExpertKernels, findNvcc } from '../../ffi/kernels/build.ts';
import { CUDA_EXPERTS_TOLERANCE, createCudaExperts } from '../../ffi/kernels/cuda-experts.ts';
import { loadExpertKernels } from '../../ffi/kernels/moe-library.ts';
import { expertForwardFloat32, maxRelativeError } from '../../ffi/kernels/reference.ts';

const rt = loadCudaRuntime();
const gpuReason = (() => {
  try {
    return rt.deviceCount() > 0 ? null : 'no CUDA device';
  } catch (err) {
    return (err as Error).message;
  }
})();
const nvccReason = (() => {
  try {
    findNvcc();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
})();
if (nvccReason !== null) console.log(`[test/ffi] kernel build tests skipped: ${nvccReason}`);
if (gpuReason !== null) console.log(`[test/ffi] kernel GPU test skipped: ${gpuReason}`);

function weights(d: number, h: number, experts: number[]) {
  const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 0.5);
  return {
    hidden: d,
    width: h,
    experts,
    w1: experts.map((e) => rand(d * h, e + 1)),
    w2: experts.map((e) => rand(h * d, e + 101)),
  };
}

describe.if(nvccReason === null)('kernel build', () => {
  test('moe.cu compiles once, is reused while unchanged, and its symbols run', async () => {
    const outDir = mkdtempSync(join(tmpdir(), 'rankmesh-kernels-'));
    const first = await buildExpertKernels({ outDir });
    expect(first.compiled).toBe(true);
    const second = await buildExpertKernels({ outDir });
    expect(second).toEqual({ ...first, compiled: false });
    const k = loadExpertKernels(first.path);
    // Invalid shapes are refused inside the library; a real launch needs the driver.
    expect(k.forward(0, 0, 0, 0, 0, 1, 0, 4, 0)).toBe(1); // cudaErrorInvalidValue
    expect(k.forward(0, 0, 0, 0, 0, 0, 4, 4, 0)).toBe(0); // nothing to do
    if (gpuReason !== null) expect(rt.errorName(k.forward(0, 0, 0, 0, 0, 1, 4, 4, 0))).toBe('cudaErrorInsufficientDriver');
    k.close();
    rmSync(outDir, { recursive: true, force: true });
  }, 120_000);
});

describe('CPU reference', () => {
  test('the float32 reference stays within the stated tolerance of exact float64 math', () => {
    const d = 32;
    const h = 96;
    const w = weights(d, h, [0]);
    const rows = 3;
    const x = Float32Array.from({ length: rows * d }, (_, i) => Math.cos(i * 0.7));
    const w1 = w.w1[0] as Float32Array;
    const w2 = w.w2[0] as Float32Array;
    const exact = new Float32Array(rows * d);
    for (let r = 0; r < rows; r++) {
      const hid = Array.from({ length: h }, (_, j) => Math.max(0, Array.from({ length: d }, (_, k) => (x[r * d + k] ?? 0) * (w1[k * h + j] ?? 0)).reduce((a, b) => a + b, 0)));
      for (let i = 0; i < d; i++) exact[r * d + i] = hid.reduce((a, v, j) => a + v * (w2[j * d + i] ?? 0), 0);
    }
    const approx = expertForwardFloat32(x, w1, w2, rows, d, h);
    expect(maxRelativeError(approx, exact)).toBeLessThanOrEqual(CUDA_EXPERTS_TOLERANCE);
    expect(approx.some((v) => v !== 0)).toBe(true);
  });
});

describe('kernel errors', () => {
  test('a missing nvcc is a KernelBuildError naming what was tried', () => {
    expect(() => findNvcc({ nvccPath: '/nonexistent/nvcc' })).toThrow(KernelBuildError);
    expect(() => findNvcc({ nvccPath: '/nonexistent/nvcc' })).toThrow('/nonexistent/nvcc');
  });

  test('a file that is not a kernel library is a KernelBuildError', () => {
    expect(() => loadExpertKernels('/usr/local/cuda/lib64/libcudart.so.13')).toThrow(KernelBuildError);
  });
});

describe('CUDA ExpertBackend', () => {
  test('rejects bad weights and use before load with typed errors', async () => {
    const b = createCudaExperts();
    expect(b.kind).toBe('cuda');
    await expect(b.forward(0, new Float32Array(4), 1)).rejects.toBeInstanceOf(FfiArgumentError);
    await expect(b.load({ ...weights(4, 8, [0]), w1: [new Float32Array(3)] })).rejects.toBeInstanceOf(FfiArgumentError);
  });

  test.if(gpuReason !== null)('load() without a driver fails with the no-driver CudaError before any build', async () => {
    const b = createCudaExperts({ kernels: { nvccPath: '/nonexistent/nvcc' } });
    const err = await b.load(weights(4, 8, [0, 2])).catch((e) => e);
    expect(err).toBeInstanceOf(CudaError);
    expect(err.noDriver).toBe(true);
    expect(err.code).toBe(35);
    await b.unload();
  });

  test.if(gpuReason === null)('forward matches the float32 CPU reference', async () => {
    const d = 64;
    const h = 256;
    const w = weights(d, h, [1, 3]);
    const b = createCudaExperts();
    await b.load(w);
    const rows = 5;
    const x = Float32Array.from({ length: rows * d }, (_, i) => Math.cos(i));
    const y = await b.forward(3, x, rows);
    const ref = expertForwardFloat32(x, w.w1[1] as Float32Array, w.w2[1] as Float32Array, rows, d, h);
    expect(maxRelativeError(y, ref)).toBeLessThanOrEqual(CUDA_EXPERTS_TOLERANCE);
    await expect(b.forward(0, x, rows)).rejects.toBeInstanceOf(FfiArgumentError);
    await b.unload();
  });
});
