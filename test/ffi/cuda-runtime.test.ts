// The libcudart bindings against this host's real library: versions, error names, and — without a GPU driver — every driver-needing call failing as a typed "no CUDA driver" error; on a GPU host, a copy round trip instead.
import { describe, expect, test } from 'bun:test';
import { loadCudaRuntime, MemcpyKind, pollUntil } from '../../ffi/cuda/runtime.ts';
import { CudaError, DeadlineExceededError, FfiArgumentError } from '../../ffi/errors.ts';

const rt = loadCudaRuntime();
const driverCheck = (() => {
  try {
    return { count: rt.deviceCount(), error: null };
  } catch (err) {
    return { count: 0, error: err as CudaError };
  }
})();
const hasGpu = driverCheck.count > 0;
if (!hasGpu) console.log(`[test/ffi] GPU tests skipped: ${driverCheck.error?.message ?? 'no CUDA device'}`);

describe('libcudart (any host)', () => {
  test('runtime version is CUDA 12 or 13; driver version is read without a device', () => {
    const v = rt.versions();
    expect(v.runtime).toBeGreaterThanOrEqual(12000);
    expect(v.driver).toBeGreaterThanOrEqual(0);
    if (!hasGpu) expect(v.driver).toBe(0);
  });

  test('error codes map to their enum names and descriptions', () => {
    expect(rt.errorName(0)).toBe('cudaSuccess');
    expect(rt.errorName(2)).toBe('cudaErrorMemoryAllocation');
    expect(rt.errorName(35)).toBe('cudaErrorInsufficientDriver');
    expect(rt.errorName(100)).toBe('cudaErrorNoDevice');
    expect(rt.errorName(600)).toBe('cudaErrorNotReady');
    expect(rt.errorString(35)).toContain('driver');
    const err = (() => {
      try {
        rt.check('cudaFake', 700);
      } catch (e) {
        return e as CudaError;
      }
    })();
    expect(err).toBeInstanceOf(CudaError);
    expect(err?.codeName).toBe('cudaErrorIllegalAddress');
    expect(err?.noDriver).toBe(false);
  });

  test('bad arguments are refused before the library is called', () => {
    expect(() => rt.malloc(-1)).toThrow(FfiArgumentError);
    expect(() => rt.malloc(1.5)).toThrow(FfiArgumentError);
    expect(() => rt.memcpy(new Uint8Array(4), new Uint8Array(8), 8, MemcpyKind.HostToHost)).toThrow(FfiArgumentError);
    expect(() => rt.setDevice(-1)).toThrow(FfiArgumentError);
  });

  test('polling gives up at the deadline instead of blocking', async () => {
    const started = Date.now();
    await expect(pollUntil('never', () => false, { deadlineMs: Date.now() + 20, pollIntervalMs: 1 })).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(Date.now() - started).toBeLessThan(1000);
    const boom = new Error('cancelled');
    await expect(pollUntil('cancel', () => false, { cancelled: () => boom })).rejects.toBe(boom);
  });
});

describe.if(!hasGpu)('libcudart without a driver', () => {
  test('every driver-needing call is a CudaError flagged noDriver, code 35', async () => {
    const calls: Array<[string, () => unknown]> = [
      ['cudaGetDeviceCount', () => rt.deviceCount()],
      ['cudaSetDevice', () => rt.setDevice(0)],
      ['cudaGetDevice', () => rt.getDevice()],
      ['cudaDeviceSynchronize', () => rt.deviceSynchronize()],
      ['cudaMemGetInfo', () => rt.memGetInfo()],
      ['cudaMalloc', () => rt.malloc(1024)],
      ['cudaFree', () => rt.free(0)],
      ['cudaMallocHost', () => rt.mallocHost(1024)],
      ['cudaFreeHost', () => rt.freeHost(0)],
      ['cudaMemcpy', () => rt.memcpy(new Uint8Array(4), new Uint8Array(4), 4, MemcpyKind.HostToHost)],
      ['cudaMemcpyAsync', () => rt.memcpyAsync(new Uint8Array(4), new Uint8Array(4), 4, MemcpyKind.HostToHost, 0)],
      ['cudaMemset', () => rt.memset(0, 0, 4)],
      ['cudaStreamCreateWithFlags', () => rt.streamCreate()],
      ['cudaStreamQuery', () => rt.streamQuery(0)],
      ['cudaStreamSynchronize', () => rt.streamSynchronize(0)],
      ['cudaStreamDestroy', () => rt.streamDestroy(0)],
      ['cudaEventCreate', () => rt.eventCreate()],
      ['cudaEventRecord', () => rt.eventRecord(0, 0)],
      ['cudaEventQuery', () => rt.eventQuery(0)],
      ['cudaEventElapsedTime', () => rt.eventElapsedMs(0, 0)],
      ['cudaEventDestroy', () => rt.eventDestroy(0)],
      ['cudaStreamBeginCapture', () => rt.beginCapture(0)],
      ['cudaStreamEndCapture', () => rt.endCapture(0)],
      ['cudaGraphInstantiate', () => rt.graphInstantiate(0)],
      ['cudaGraphLaunch', () => rt.graphLaunch(0, 0)],
      ['cudaGraphExecDestroy', () => rt.graphExecDestroy(0)],
      ['cudaGraphDestroy', () => rt.graphDestroy(0)],
    ];
    for (const [name, call] of calls) {
      let caught: unknown = null;
      try {
        call();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(CudaError);
      const e = caught as CudaError;
      expect({ name, call: e.call, code: e.code, codeName: e.codeName, noDriver: e.noDriver }).toEqual({
        name,
        call: name,
        code: 35,
        codeName: 'cudaErrorInsufficientDriver',
        noDriver: true,
      });
    }
    await expect(rt.waitStream(0, { deadlineMs: Date.now() + 1000 })).rejects.toBeInstanceOf(CudaError);
  });
});

describe.if(hasGpu)('libcudart with a GPU', () => {
  test('device memory round trip through a stream', async () => {
    const bytes = 1 << 20;
    const src = new Uint8Array(bytes).map((_, i) => i & 0xff);
    const back = new Uint8Array(bytes);
    const dev = rt.malloc(bytes);
    const stream = rt.streamCreate();
    rt.memcpyAsync(dev, src, bytes, MemcpyKind.HostToDevice, stream);
    rt.memcpyAsync(back, dev, bytes, MemcpyKind.DeviceToHost, stream);
    await rt.waitStream(stream, { deadlineMs: Date.now() + 10_000 });
    expect(back).toEqual(src);
    rt.streamDestroy(stream);
    rt.free(dev);
  });
});
