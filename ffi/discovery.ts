// Finds libcudart and libnccl on this host. The order is: an explicit path from config
// (authoritative — when given, nothing else is tried, so a misconfigured path is reported
// instead of silently replaced), then CUDA_HOME / NCCL_HOME, LD_LIBRARY_PATH, the usual
// system directories, the ld.so.conf directories, and finally the pip wheels
// (site-packages/nvidia/<pkg>/lib). A candidate is accepted only when dlopen succeeds and a
// probe symbol binds; otherwise the next one is tried and the reason is kept, so a failure
// lists every path searched and why each was rejected.
import { dlopen, FFIType } from 'bun:ffi';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LibraryNotFoundError, type SearchAttempt } from './errors.ts';

export interface DiscoveryOptions {
  /** A path from config. When set, it is the only candidate. */
  readonly explicitPath?: string;
  /** Environment to read CUDA_HOME, NCCL_HOME, LD_LIBRARY_PATH, VIRTUAL_ENV from; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** site-packages directories for the pip wheels; default: python3's site dirs plus venv layouts. */
  readonly sitePackages?: readonly string[];
  /** System directories; default the usual ones for this architecture plus ld.so.conf. */
  readonly systemDirs?: readonly string[];
}

export interface FoundLibrary {
  readonly path: string;
  readonly source: string;
  /** Candidates rejected before this one. */
  readonly rejected: readonly SearchAttempt[];
}

export interface Candidate {
  readonly path: string;
  readonly source: string;
}

/** What to look for: file names, the *_HOME variable and its subdirectories, the pip package. */
export interface LibrarySpec {
  readonly library: string;
  readonly fileNames: readonly string[];
  readonly homeEnv: string;
  readonly homeSubdirs: readonly string[];
  /** Relative to a site-packages directory. */
  readonly pipSubdir: string;
  /** A symbol every usable version exports (int fn(int*)). */
  readonly probeSymbol: string;
}

export const CUDART_SPEC: LibrarySpec = {
  library: 'libcudart',
  // The bindings target the CUDA 13 ABI; .so.12 shares every symbol they bind.
  fileNames: ['libcudart.so.13', 'libcudart.so.12', 'libcudart.so'],
  homeEnv: 'CUDA_HOME',
  homeSubdirs: ['lib64', 'lib', `targets/${multiarchCpu()}-linux/lib`],
  pipSubdir: 'nvidia/cuda_runtime/lib',
  probeSymbol: 'cudaRuntimeGetVersion',
};

export const NCCL_SPEC: LibrarySpec = {
  library: 'libnccl',
  fileNames: ['libnccl.so.2', 'libnccl.so'],
  homeEnv: 'NCCL_HOME',
  homeSubdirs: ['lib', 'lib64'],
  pipSubdir: 'nvidia/nccl/lib',
  probeSymbol: 'ncclGetVersion',
};

/** libcudart, or LibraryNotFoundError listing everything tried. */
export function findCudart(opts: DiscoveryOptions = {}): FoundLibrary {
  return findLibrary(CUDART_SPEC, opts);
}

/** libnccl, or LibraryNotFoundError listing everything tried. */
export function findNccl(opts: DiscoveryOptions = {}): FoundLibrary {
  return findLibrary(NCCL_SPEC, opts);
}

export function findLibrary(spec: LibrarySpec, opts: DiscoveryOptions = {}): FoundLibrary {
  const attempts: SearchAttempt[] = [];
  for (const candidate of libraryCandidates(spec, opts)) {
    const reason = probeLibrary(candidate.path, spec.probeSymbol);
    if (reason === null) return { ...candidate, rejected: attempts };
    attempts.push({ ...candidate, reason });
  }
  throw new LibraryNotFoundError(spec.library, attempts);
}

/** Every candidate path in search order, without duplicates. */
export function libraryCandidates(spec: LibrarySpec, opts: DiscoveryOptions = {}): Candidate[] {
  if (opts.explicitPath !== undefined) return [{ path: opts.explicitPath, source: 'explicit' }];
  const env = opts.env ?? process.env;
  const out: Candidate[] = [];
  const seen = new Set<string>();
  const addDir = (dir: string, source: string): void => {
    for (const file of spec.fileNames) {
      const path = join(dir, file);
      if (seen.has(path)) continue;
      seen.add(path);
      out.push({ path, source });
    }
  };
  const home = env[spec.homeEnv];
  if (home !== undefined && home !== '') {
    for (const sub of spec.homeSubdirs) addDir(join(home, sub), spec.homeEnv);
    // A home that points straight at the library directory is common enough to accept.
    addDir(home, spec.homeEnv);
  }
  for (const dir of splitPathList(env.LD_LIBRARY_PATH)) addDir(dir, 'LD_LIBRARY_PATH');
  for (const dir of opts.systemDirs ?? defaultSystemDirs()) addDir(dir, 'system');
  for (const site of opts.sitePackages ?? defaultSitePackages(env)) {
    addDir(join(site, spec.pipSubdir), 'pip');
  }
  return out;
}

/** null when the library opens and its probe symbol binds; otherwise why not. */
export function probeLibrary(path: string, probeSymbol: string): string | null {
  if (!existsSync(path)) return 'not present';
  try {
    if (!statSync(path).isFile()) return 'not a regular file';
  } catch (err) {
    return `cannot stat: ${errorText(err)}`;
  }
  try {
    const lib = dlopen(path, { [probeSymbol]: { args: [FFIType.ptr], returns: FFIType.i32 } });
    lib.close();
    return null;
  } catch (err) {
    return `dlopen failed: ${errorText(err)}`;
  }
}

/** The usual library directories for this architecture, then those named in ld.so.conf. */
export function defaultSystemDirs(): string[] {
  const triple = `${multiarchCpu()}-linux-gnu`;
  const dirs = [
    '/usr/local/cuda/lib64',
    '/usr/local/cuda/lib',
    `/usr/lib/${triple}`,
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/lib',
  ];
  for (const dir of ldSoConfDirs()) if (!dirs.includes(dir)) dirs.push(dir);
  return dirs;
}

let cachedPythonSites: string[] | undefined;

/** site-packages of python3 (asked once, bounded by a timeout) and of common venv layouts. */
export function defaultSitePackages(env: Readonly<Record<string, string | undefined>>): string[] {
  cachedPythonSites ??= askPythonSites();
  const dirs = [...cachedPythonSites];
  const prefixes = [env.VIRTUAL_ENV, env.CONDA_PREFIX, join(process.cwd(), '.venv'), join(process.cwd(), 'venv')];
  for (const prefix of prefixes) {
    if (prefix === undefined || prefix === '') continue;
    for (const site of venvSitePackages(prefix)) if (!dirs.includes(site)) dirs.push(site);
  }
  return dirs;
}

function askPythonSites(): string[] {
  const python = Bun.which('python3');
  if (python === null) return [];
  const script = 'import site,sys;print("\\n".join(site.getsitepackages()+[site.getusersitepackages()]))';
  try {
    const res = Bun.spawnSync([python, '-c', script], { timeout: 5000, stdout: 'pipe', stderr: 'ignore' });
    if (res.exitCode !== 0) return [];
    return res.stdout.toString().split('\n').map((s) => s.trim()).filter((s) => s !== '');
  } catch {
    return [];
  }
}

function venvSitePackages(prefix: string): string[] {
  const lib = join(prefix, 'lib');
  let entries: string[];
  try {
    entries = readdirSync(lib);
  } catch {
    return [];
  }
  return entries.filter((e) => e.startsWith('python3')).sort().map((e) => join(lib, e, 'site-packages'));
}

function ldSoConfDirs(): string[] {
  const dirs: string[] = [];
  const files = ['/etc/ld.so.conf'];
  try {
    for (const f of readdirSync('/etc/ld.so.conf.d').sort()) if (f.endsWith('.conf')) files.push(join('/etc/ld.so.conf.d', f));
  } catch {
    // No ld.so.conf.d: only the main file, if any.
  }
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      if (line.startsWith('/') && !dirs.includes(line)) dirs.push(line);
    }
  }
  return dirs;
}

function splitPathList(value: string | undefined): string[] {
  return (value ?? '').split(':').filter((s) => s !== '');
}

function multiarchCpu(): string {
  return process.arch === 'arm64' ? 'aarch64' : 'x86_64';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
