// Compiles ffi/kernels/moe.cu into a shared library with nvcc, once per source version:
// the output name carries a hash of the source, the flags and the nvcc version, so an
// unchanged kernel is reused and a changed one is rebuilt. nvcc runs as a child process
// (the event loop keeps turning), writes to a temporary name and is renamed into place,
// so two nodes building at once on one host never load a half-written file.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { findCudart } from '../discovery.ts';
import { KernelBuildError } from '../errors.ts';

export const KERNEL_SOURCE = join(import.meta.dir, 'moe.cu');
export const KERNEL_BUILD_DIR = join(import.meta.dir, 'build');

/**
 * Ampere and Hopper machine code, plus Hopper PTX that newer GPUs JIT-compile.
 * (nvcc 13 dropped everything before sm_75.)
 */
export const KERNEL_ARCH_FLAGS = [
  '-gencode=arch=compute_80,code=sm_80',
  '-gencode=arch=compute_90,code=sm_90',
  '-gencode=arch=compute_90,code=compute_90',
] as const;

export interface KernelBuildOptions {
  /** nvcc to use; default CUDA_HOME/bin/nvcc, then PATH, then /usr/local/cuda/bin/nvcc. */
  readonly nvccPath?: string;
  /** Where the libraries go; default ffi/kernels/build. */
  readonly outDir?: string;
  /** Directory of the libcudart the process uses, baked in as the library's rpath. */
  readonly cudartDir?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Bound on one nvcc run; default 5 minutes. */
  readonly timeoutMs?: number;
}

export interface BuiltKernels {
  readonly path: string;
  /** False when an existing build of the same source was reused. */
  readonly compiled: boolean;
  readonly nvcc: string;
}

/** The nvcc to use, or KernelBuildError naming every place looked. */
export function findNvcc(opts: KernelBuildOptions = {}): string {
  const env = opts.env ?? process.env;
  const tried: string[] = [];
  const candidates: string[] = [];
  if (opts.nvccPath !== undefined) candidates.push(opts.nvccPath);
  else {
    if (env.CUDA_HOME) candidates.push(join(env.CUDA_HOME, 'bin', 'nvcc'));
    const onPath = Bun.which('nvcc', { PATH: env.PATH ?? '' });
    if (onPath !== null) candidates.push(onPath);
    candidates.push('/usr/local/cuda/bin/nvcc');
  }
  for (const c of candidates) {
    if (existsSync(c)) return c;
    tried.push(c);
  }
  throw new KernelBuildError(`nvcc not found (tried: ${tried.join(', ')}); install the CUDA toolkit or set CUDA_HOME`);
}

/** Builds the expert kernels if this source has not been built yet; returns the library path. */
export async function buildExpertKernels(opts: KernelBuildOptions = {}): Promise<BuiltKernels> {
  const nvcc = findNvcc(opts);
  const source = readFileSync(KERNEL_SOURCE);
  const args = compileArgs(opts.cudartDir ?? defaultCudartDir(opts));
  const version = await run([nvcc, '--version'], 30_000);
  const hash = createHash('sha256').update(source).update(args.join(' ')).update(version.stdout).digest('hex').slice(0, 16);
  const outDir = opts.outDir ?? KERNEL_BUILD_DIR;
  const path = join(outDir, `librankmesh-moe-${hash}.so`);
  if (existsSync(path)) return { path, compiled: false, nvcc };
  mkdirSync(outDir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const res = await run([nvcc, ...args, '-o', tmp, KERNEL_SOURCE], opts.timeoutMs ?? 300_000);
  if (res.exitCode !== 0) {
    rmSync(tmp, { force: true });
    throw new KernelBuildError(`nvcc failed (exit ${res.exitCode}) compiling ${KERNEL_SOURCE}`, res.stderr + res.stdout);
  }
  renameSync(tmp, path);
  return { path, compiled: true, nvcc };
}

/** The directory of the libcudart discovery picks, else the toolkit's lib64 next to nvcc. */
function defaultCudartDir(opts: KernelBuildOptions): string {
  try {
    return dirname(findCudart(opts.env === undefined ? {} : { env: opts.env }).path);
  } catch {
    return join(dirname(dirname(findNvcc(opts))), 'lib64');
  }
}

function compileArgs(cudartDir: string): string[] {
  return [
    '-O3',
    '-shared',
    '-Xcompiler',
    '-fPIC',
    // Shared cudart: the kernels and the bindings must share one runtime (one context,
    // one set of streams), and the rpath finds the same libcudart without LD_LIBRARY_PATH.
    '-cudart',
    'shared',
    `-Xlinker`,
    `-rpath,${cudartDir}`,
    ...KERNEL_ARCH_FLAGS,
  ];
}

async function run(cmd: string[], timeoutMs: number): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  try {
    const proc = Bun.spawn(cmd, { stdout: 'pipe', stderr: 'pipe', timeout: timeoutMs });
    const [stdout, stderr, exitCode] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    return { exitCode, stdout, stderr };
  } catch (err) {
    throw new KernelBuildError(`could not run ${cmd[0]}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
