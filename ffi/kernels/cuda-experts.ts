// The reference engine's experts on CUDA: weights live in device memory from load() to
// unload(); forward() stages x through pinned memory, runs the two kernels of moe.cu on
// the backend's stream and polls the stream (never blocking the JS thread) until the
// result is back. Agreement with the CPU backend: the kernels sum in the same order
// without fused multiply-add, so outputs match a float32 CPU loop to within
// CUDA_EXPERTS_TOLERANCE (relative), usually exactly.
import { dirname } from 'node:path';
import type { ExpertBackend, ExpertWeights } from '../../node/engine/experts.ts';
import { loadCudaRuntime, MemcpyKind, type CudaRuntime, type DevicePtr, type HostPtr, type Stream } from '../cuda/runtime.ts';
import type { DiscoveryOptions } from '../discovery.ts';
import { FfiArgumentError } from '../errors.ts';
import { buildExpertKernels, type KernelBuildOptions } from './build.ts';
import { loadExpertKernels, type ExpertKernels } from './moe-library.ts';

/** Largest |cuda − cpu| / max(1, |cpu|) accepted between the backends. */
export const CUDA_EXPERTS_TOLERANCE = 1e-4;

export interface CudaExpertsOptions {
  /** CUDA device index; default 0. */
  readonly device?: number;
  /** Where libcudart is (config); default discovery. */
  readonly cudart?: DiscoveryOptions;
  readonly kernels?: KernelBuildOptions;
  /** Bound on one forward; default 30 s. */
  readonly forwardTimeoutMs?: number;
}

/** An ExpertBackend on CUDA. Nothing native happens until load(). */
export function createCudaExperts(opts: CudaExpertsOptions = {}): ExpertBackend {
  return new CudaExperts(opts);
}

interface DeviceExpert {
  readonly w1: DevicePtr;
  readonly w2: DevicePtr;
}

interface Scratch {
  readonly rowsMax: number;
  readonly x: DevicePtr;
  readonly hid: DevicePtr;
  readonly y: DevicePtr;
  readonly staging: HostPtr;
  readonly stagingView: Uint8Array;
}

class CudaExperts implements ExpertBackend {
  readonly kind = 'cuda' as const;
  private rt: CudaRuntime | null = null;
  private kernels: ExpertKernels | null = null;
  private stream: Stream | null = null;
  private shape: { d: number; h: number } | null = null;
  private experts = new Map<number, DeviceExpert>();
  private scratch: Scratch | null = null;
  /** forward() calls share the scratch buffers: one at a time. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: CudaExpertsOptions) {}

  async load(weights: ExpertWeights): Promise<void> {
    validateWeights(weights);
    await this.unload();
    // The driver is checked before nvcc runs, so a host without a GPU fails fast and clearly.
    const rt = (this.rt ??= loadCudaRuntime(this.opts.cudart ?? {}));
    rt.setDevice(this.opts.device ?? 0);
    if (this.kernels === null) {
      const built = await buildExpertKernels({ cudartDir: dirname(rt.path), ...this.opts.kernels });
      this.kernels = loadExpertKernels(built.path);
    }
    this.stream ??= rt.streamCreate();
    const { hidden: d, width: h } = weights;
    try {
      weights.experts.forEach((e, i) => {
        const w1 = upload(rt, weights.w1[i] as Float32Array);
        const w2 = upload(rt, weights.w2[i] as Float32Array);
        this.experts.set(e, { w1, w2 });
      });
    } catch (err) {
      await this.unload();
      throw err;
    }
    this.shape = { d, h };
  }

  forward(expert: number, x: Float32Array, rows: number): Promise<Float32Array> {
    const result = this.tail.catch(() => undefined).then(() => this.forwardNow(expert, x, rows));
    this.tail = result;
    return result;
  }

  async unload(): Promise<void> {
    await this.tail.catch(() => undefined);
    const rt = this.rt;
    if (rt === null) return;
    for (const e of this.experts.values()) {
      rt.free(e.w1);
      rt.free(e.w2);
    }
    this.experts.clear();
    this.freeScratch(rt);
    this.shape = null;
  }

  private async forwardNow(expert: number, x: Float32Array, rows: number): Promise<Float32Array> {
    const rt = this.rt;
    const shape = this.shape;
    const held = this.experts.get(expert);
    if (rt === null || shape === null || this.kernels === null || this.stream === null) throw new FfiArgumentError('cuda experts: load() first');
    if (held === undefined) throw new FfiArgumentError(`cuda experts: expert ${expert} is not loaded here`);
    const { d, h } = shape;
    if (!Number.isInteger(rows) || rows < 0 || x.length !== rows * d) {
      throw new FfiArgumentError(`cuda experts: x has ${x.length} floats, expected rows (${rows}) × d (${d})`);
    }
    if (rows === 0) return new Float32Array(0);
    const s = this.ensureScratch(rt, rows, d, h);
    const bytes = rows * d * 4;
    s.stagingView.set(new Uint8Array(x.buffer, x.byteOffset, bytes));
    rt.memcpyAsync(s.x, s.staging, bytes, MemcpyKind.HostToDevice, this.stream);
    rt.check('rankmesh_moe_expert_forward', this.kernels.forward(s.x, held.w1, held.w2, s.hid, s.y, rows, d, h, this.stream));
    rt.memcpyAsync(s.staging, s.y, bytes, MemcpyKind.DeviceToHost, this.stream);
    await rt.waitStream(this.stream, { deadlineMs: Date.now() + (this.opts.forwardTimeoutMs ?? 30_000) });
    return new Float32Array(s.stagingView.slice(0, bytes).buffer);
  }

  private ensureScratch(rt: CudaRuntime, rows: number, d: number, h: number): Scratch {
    if (this.scratch !== null && this.scratch.rowsMax >= rows) return this.scratch;
    this.freeScratch(rt);
    const rowsMax = 2 ** Math.ceil(Math.log2(rows));
    const staging = rt.mallocHost(rowsMax * d * 4);
    this.scratch = {
      rowsMax,
      x: rt.malloc(rowsMax * d * 4),
      hid: rt.malloc(rowsMax * h * 4),
      y: rt.malloc(rowsMax * d * 4),
      staging,
      stagingView: rt.hostView(staging, rowsMax * d * 4),
    };
    return this.scratch;
  }

  private freeScratch(rt: CudaRuntime): void {
    const s = this.scratch;
    if (s === null) return;
    this.scratch = null;
    rt.free(s.x);
    rt.free(s.hid);
    rt.free(s.y);
    rt.freeHost(s.staging);
  }
}

function upload(rt: CudaRuntime, data: Float32Array): DevicePtr {
  const p = rt.malloc(data.byteLength);
  try {
    rt.memcpy(p, data, data.byteLength, MemcpyKind.HostToDevice);
  } catch (err) {
    rt.free(p);
    throw err;
  }
  return p;
}

function validateWeights(w: ExpertWeights): void {
  const { hidden: d, width: h } = w;
  if (!Number.isInteger(d) || d < 1 || !Number.isInteger(h) || h < 1) throw new FfiArgumentError(`bad expert shape d=${d} h=${h}`);
  if (w.w1.length !== w.experts.length || w.w2.length !== w.experts.length) {
    throw new FfiArgumentError('w1/w2 must have one entry per held expert');
  }
  w.experts.forEach((e, i) => {
    if ((w.w1[i]?.length ?? -1) !== d * h || (w.w2[i]?.length ?? -1) !== h * d) {
      throw new FfiArgumentError(`expert ${e}: w1 must be d×h and w2 h×d floats`);
    }
  });
}
