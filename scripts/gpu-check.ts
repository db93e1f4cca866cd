// Runs the native bindings end to end on this host and prints a pass/fail table:
// libcudart, devices, allocation and copies, the expert kernel against the CPU reference,
// CUDA graph capture and replay, event timing, and a one-rank NCCL all-reduce.
//
//   bun scripts/gpu-check.ts [--cudart PATH] [--nccl PATH] [--device N]
//
// Exit codes: 0 every check passed; 1 a check failed; 2 not a GPU host (no libcudart,
// no driver or no device — the reason is printed); 3 the GPU checks passed but no
// usable libnccl was found.
import { parseArgs } from 'node:util';
import { createNcclCommunicator, createNcclUniqueId, cudaDeviceMemory } from '../ffi/comm/nccl.ts';
import { loadCudaRuntime, MemcpyKind, StreamCaptureMode, type CudaRuntime } from '../ffi/cuda/runtime.ts';
import { CudaError } from '../ffi/errors.ts';
import { buildExpertKernels } from '../ffi/kernels/build.ts';
import { CUDA_EXPERTS_TOLERANCE, createCudaExperts } from '../ffi/kernels/cuda-experts.ts';
import { loadExpertKernels } from '../ffi/kernels/moe-library.ts';
import { expertForwardFloat32, maxRelativeError } from '../ffi/kernels/reference.ts';
import { loadNccl } from '../ffi/nccl/library.ts';
import { dirname } from 'node:path';

type Status = 'pass' | 'fail' | 'skip';
interface Row {
  readonly check: string;
  readonly status: Status;
  readonly detail: string;
}

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_NO_GPU = 2;
const EXIT_NO_NCCL = 3;

const { values } = parseArgs({
  options: { cudart: { type: 'string' }, nccl: { type: 'string' }, device: { type: 'string', default: '0' } },
});
const device = Number(values.device);
const rows: Row[] = [];
/** Full multi-line reasons (e.g. every path discovery tried), printed under the table. */
const notes: string[] = [];

async function check(name: string, body: () => Promise<string> | string): Promise<boolean> {
  try {
    rows.push({ check: name, status: 'pass', detail: await body() });
    return true;
  } catch (err) {
    rows.push({ check: name, status: 'fail', detail: summary(err) });
    return false;
  }
}

function skip(name: string, reason: string): void {
  rows.push({ check: name, status: 'skip', detail: reason });
}

function printTable(): void {
  const w = Math.max(...rows.map((r) => r.check.length));
  console.log(`${'check'.padEnd(w)}  status  detail`);
  for (const r of rows) console.log(`${r.check.padEnd(w)}  ${r.status.padEnd(6)}  ${r.detail}`);
  for (const n of notes) console.log(`\n${n}`);
}

/** First line for the table; the whole message goes to the notes when it has more. */
function summary(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const [first = '', ...rest] = text.split('\n');
  if (rest.length > 0) notes.push(text);
  return first;
}

async function gpuChecks(rt: CudaRuntime): Promise<void> {
  await check('memory info', () => {
    const m = rt.memGetInfo();
    return `${(m.freeBytes / 2 ** 30).toFixed(1)} GiB free of ${(m.totalBytes / 2 ** 30).toFixed(1)} GiB`;
  });

  await check('alloc + copy round trip', async () => {
    const bytes = 64 << 20;
    const src = new Uint8Array(bytes).map((_, i) => (i * 7) & 0xff);
    const pinned = rt.mallocHost(bytes);
    const view = rt.hostView(pinned, bytes);
    const dev = rt.malloc(bytes);
    const stream = rt.streamCreate();
    const [start, end] = [rt.eventCreate(), rt.eventCreate()];
    try {
      view.set(src);
      rt.eventRecord(start, stream);
      rt.memcpyAsync(dev, pinned, bytes, MemcpyKind.HostToDevice, stream);
      rt.eventRecord(end, stream);
      await rt.waitStream(stream, { deadlineMs: Date.now() + 10_000 });
      const h2dMs = rt.eventElapsedMs(start, end);
      view.fill(0);
      rt.memcpyAsync(pinned, dev, bytes, MemcpyKind.DeviceToHost, stream);
      await rt.waitStream(stream, { deadlineMs: Date.now() + 10_000 });
      for (let i = 0; i < bytes; i += 4093) if (view[i] !== src[i]) throw new Error(`byte ${i} differs after the round trip`);
      rt.memset(dev, 0xab, 16);
      const head = new Uint8Array(16);
      rt.memcpy(head, dev, 16, MemcpyKind.DeviceToHost);
      if (!head.every((b) => b === 0xab)) throw new Error('memset not visible');
      return `64 MiB H2D in ${h2dMs.toFixed(2)} ms (${(bytes / 1e6 / h2dMs).toFixed(1)} GB/s, events), D2H verified, memset verified`;
    } finally {
      rt.eventDestroy(start);
      rt.eventDestroy(end);
      rt.streamDestroy(stream);
      rt.free(dev);
      rt.freeHost(pinned);
    }
  });

  const d = 256;
  const h = 1024;
  const seeded = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.25);
  const w1 = seeded(d * h, 1);
  const w2 = seeded(h * d, 2);
  const rowsN = 32;
  const x = seeded(rowsN * d, 3);
  const ref = expertForwardFloat32(x, w1, w2, rowsN, d, h);

  await check('expert kernel vs CPU', async () => {
    const backend = createCudaExperts({ device });
    await backend.load({ hidden: d, width: h, experts: [0], w1: [w1], w2: [w2] });
    try {
      const y = await backend.forward(0, x, rowsN);
      const err = maxRelativeError(y, ref);
      if (err > CUDA_EXPERTS_TOLERANCE) throw new Error(`max relative error ${err} > ${CUDA_EXPERTS_TOLERANCE}`);
      return `${rowsN}×${d}·${d}×${h}·${h}×${d}, max relative error ${err.toExponential(2)} (tolerance ${CUDA_EXPERTS_TOLERANCE})`;
    } finally {
      await backend.unload();
    }
  });

  await check('graph capture + replay, event timing', async () => {
    const kernels = loadExpertKernels((await buildExpertKernels({ cudartDir: dirname(rt.path) })).path);
    const stream = rt.streamCreate();
    const bufs = [x, w1, w2].map((a) => {
      const p = rt.malloc(a.byteLength);
      rt.memcpy(p, a, a.byteLength, MemcpyKind.HostToDevice);
      return p;
    }) as [number, number, number];
    const hid = rt.malloc(rowsN * h * 4);
    const y = rt.malloc(rowsN * d * 4);
    const [start, end] = [rt.eventCreate(), rt.eventCreate()];
    try {
      rt.beginCapture(stream, StreamCaptureMode.ThreadLocal);
      rt.check('rankmesh_moe_expert_forward', kernels.forward(bufs[0], bufs[1], bufs[2], hid, y, rowsN, d, h, stream));
      const graph = rt.endCapture(stream);
      const exec = rt.graphInstantiate(graph);
      const replays = 20;
      rt.eventRecord(start, stream);
      for (let i = 0; i < replays; i++) rt.graphLaunch(exec, stream);
      rt.eventRecord(end, stream);
      await rt.waitStream(stream, { deadlineMs: Date.now() + 10_000 });
      const ms = rt.eventElapsedMs(start, end);
      const out = new Float32Array(rowsN * d);
      rt.memcpy(out, y, out.byteLength, MemcpyKind.DeviceToHost);
      rt.graphExecDestroy(exec);
      rt.graphDestroy(graph);
      const err = maxRelativeError(out, ref);
      if (err > CUDA_EXPERTS_TOLERANCE) throw new Error(`replayed graph output off by ${err}`);
      return `${replays} replays in ${ms.toFixed(3)} ms (${((ms * 1000) / replays).toFixed(1)} µs each), output matches`;
    } finally {
      rt.eventDestroy(start);
      rt.eventDestroy(end);
      for (const p of [...bufs, hid, y]) rt.free(p);
      rt.streamDestroy(stream);
      kernels.close();
    }
  });
}

async function ncclCheck(rt: CudaRuntime): Promise<'pass' | 'fail' | 'absent'> {
  let nccl;
  try {
    nccl = loadNccl(values.nccl === undefined ? {} : { explicitPath: values.nccl });
  } catch (err) {
    skip('nccl one-rank all-reduce', `no usable libnccl: ${summary(err)}`);
    return 'absent';
  }
  const lib = nccl;
  const ok = await check('nccl one-rank all-reduce', async () => {
    const comm = await createNcclCommunicator({
      key: { meshId: 'gpu-check', generation: 0, epoch: 0 },
      rank: 0,
      size: 1,
      meshRanks: [0],
      uniqueId: createNcclUniqueId(lib),
      device,
      nccl: lib,
      memory: cudaDeviceMemory(rt),
      initTimeoutMs: 30_000,
    });
    try {
      const out = await comm.allReduce(new Float32Array([1, 2, 3]), 'sum');
      if ([...out].join() !== '1,2,3') throw new Error(`all-reduce gave ${[...out].join()}`);
      await comm.barrier();
      return `NCCL ${lib.versionString} at ${lib.path}; init, all-reduce, barrier, finalize`;
    } finally {
      await comm.close();
    }
  });
  return ok ? 'pass' : 'fail';
}

async function main(): Promise<number> {
  let rt: CudaRuntime;
  try {
    rt = loadCudaRuntime(values.cudart === undefined ? {} : { explicitPath: values.cudart });
  } catch (err) {
    skip('libcudart', summary(err));
    printTable();
    return EXIT_NO_GPU;
  }
  const v = rt.versions();
  rows.push({ check: 'libcudart', status: 'pass', detail: `${rt.path}, runtime ${v.runtime}, driver ${v.driver}` });
  try {
    const count = rt.deviceCount();
    if (count === 0) throw new CudaError('cudaGetDeviceCount', 100, 'cudaErrorNoDevice', 'no CUDA-capable device');
    rt.setDevice(device);
    rows.push({ check: 'devices', status: 'pass', detail: `${count} device(s), using ${device}` });
  } catch (err) {
    const noDriver = err instanceof CudaError && err.noDriver;
    skip('devices', `${noDriver ? 'no CUDA driver/device' : 'device error'}: ${(err as Error).message}`);
    const reason = await ncclAvailability();
    skip('nccl one-rank all-reduce', `needs a GPU; ${reason}`);
    printTable();
    return noDriver ? EXIT_NO_GPU : EXIT_FAILED;
  }
  await gpuChecks(rt);
  const nccl = await ncclCheck(rt);
  printTable();
  if (rows.some((r) => r.status === 'fail')) return EXIT_FAILED;
  return nccl === 'absent' ? EXIT_NO_NCCL : EXIT_OK;
}

/** Whether libnccl could be loaded, in words, for hosts where the check itself cannot run. */
async function ncclAvailability(): Promise<string> {
  try {
    const lib = loadNccl(values.nccl === undefined ? {} : { explicitPath: values.nccl });
    return `libnccl ${lib.versionString} found at ${lib.path}`;
  } catch (err) {
    return `no NCCL either: ${summary(err)}`;
  }
}

process.exit(await main());
