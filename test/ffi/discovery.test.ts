// Library discovery: search order, the explicit path being authoritative, pip wheel layouts, and the typed error that lists every path tried and why it failed.
import { describe, expect, test } from 'bun:test';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CUDART_SPEC, defaultSitePackages, findCudart, findNccl, libraryCandidates, NCCL_SPEC } from '../../ffi/discovery.ts';
import { LibraryNotFoundError } from '../../ffi/errors.ts';
import { buildFakeNccl } from './fake-nccl.ts';

const fake = buildFakeNccl();
const isolated = { sitePackages: [] as string[], systemDirs: [] as string[] };

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('candidate order', () => {
  test('home, LD_LIBRARY_PATH, system dirs, then pip site-packages; no duplicates', () => {
    const c = libraryCandidates(NCCL_SPEC, {
      env: { NCCL_HOME: '/opt/nccl', LD_LIBRARY_PATH: '/ld/a::/opt/nccl/lib' },
      systemDirs: ['/usr/lib/x86_64-linux-gnu', '/usr/lib64'],
      sitePackages: ['/venv/lib/python3.12/site-packages'],
    });
    expect(c.map((x) => `${x.source} ${x.path}`)).toEqual([
      'NCCL_HOME /opt/nccl/lib/libnccl.so.2',
      'NCCL_HOME /opt/nccl/lib/libnccl.so',
      'NCCL_HOME /opt/nccl/lib64/libnccl.so.2',
      'NCCL_HOME /opt/nccl/lib64/libnccl.so',
      'NCCL_HOME /opt/nccl/libnccl.so.2',
      'NCCL_HOME /opt/nccl/libnccl.so',
      'LD_LIBRARY_PATH /ld/a/libnccl.so.2',
      'LD_LIBRARY_PATH /ld/a/libnccl.so',
      'system /usr/lib/x86_64-linux-gnu/libnccl.so.2',
      'system /usr/lib/x86_64-linux-gnu/libnccl.so',
      'system /usr/lib64/libnccl.so.2',
      'system /usr/lib64/libnccl.so',
      'pip /venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2',
      'pip /venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so',
    ]);
  });

  test('an explicit path is the only candidate', () => {
    const c = libraryCandidates(CUDART_SPEC, { explicitPath: '/x/libcudart.so.13', env: { CUDA_HOME: '/usr/local/cuda' } });
    expect(c).toEqual([{ path: '/x/libcudart.so.13', source: 'explicit' }]);
  });

  test('the default system dirs include the CUDA toolkit and the multiarch dir', () => {
    const paths = libraryCandidates(CUDART_SPEC, { env: {}, sitePackages: [] }).map((c) => c.path);
    expect(paths).toContain('/usr/local/cuda/lib64/libcudart.so.13');
    expect(paths).toContain('/usr/lib/x86_64-linux-gnu/libcudart.so.13');
    expect(paths).toContain('/usr/lib64/libcudart.so.13');
  });
});

describe('pip wheel locations', () => {
  test('venv layouts are searched beside python3\'s own site dirs', () => {
    const venv = mkdtempSync(join(tmpdir(), 'rankmesh-venv-'));
    mkdirSync(join(venv, 'lib', 'python3.12', 'site-packages'), { recursive: true });
    const sites = defaultSitePackages({ VIRTUAL_ENV: venv });
    rmSync(venv, { recursive: true, force: true });
    expect(sites).toContain(join(venv, 'lib', 'python3.12', 'site-packages'));
    if (Bun.which('python3') !== null) expect(sites.length).toBeGreaterThan(1);
  });
});

describe('finding real libraries', () => {
  test("this machine's libcudart is found through CUDA_HOME", () => {
    const found = findCudart({ env: { CUDA_HOME: '/usr/local/cuda' }, ...isolated });
    expect(found.source).toBe('CUDA_HOME');
    expect(found.path).toBe('/usr/local/cuda/lib64/libcudart.so.13');
  });

  test('NCCL from a pip wheel layout, after an unusable earlier candidate', () => {
    const root = mkdtempSync(join(tmpdir(), 'rankmesh-disc-'));
    const bogusHome = join(root, 'home');
    mkdirSync(join(bogusHome, 'lib'), { recursive: true });
    writeFileSync(join(bogusHome, 'lib', 'libnccl.so.2'), 'not an ELF file');
    const site = join(root, 'venv', 'lib', 'python3.12', 'site-packages');
    mkdirSync(join(site, 'nvidia', 'nccl', 'lib'), { recursive: true });
    copyFileSync(fake.path, join(site, 'nvidia', 'nccl', 'lib', 'libnccl.so.2'));
    const found = findNccl({ env: { NCCL_HOME: bogusHome }, sitePackages: [site], systemDirs: [] });
    rmSync(root, { recursive: true, force: true });
    expect(found.source).toBe('pip');
    expect(found.path).toBe(join(site, 'nvidia', 'nccl', 'lib', 'libnccl.so.2'));
    expect(found.rejected[0]).toMatchObject({ path: join(bogusHome, 'lib', 'libnccl.so.2'), source: 'NCCL_HOME' });
    expect(found.rejected[0]?.reason).toStartWith('dlopen failed');
    expect(found.rejected[1]?.reason).toBe('not present');
  });

  test('a library without the probe symbol is rejected with that reason', () => {
    const err = caught(() => findNccl({ explicitPath: '/usr/local/cuda/lib64/libcudart.so.13' }));
    expect(err).toBeInstanceOf(LibraryNotFoundError);
    const e = err as LibraryNotFoundError;
    expect(e.attempts).toHaveLength(1);
    expect(e.attempts[0]?.reason).toContain('dlopen failed');
    expect(e.message).toContain('ncclGetVersion');
  });

  test('nothing found: a typed error listing every path and why', () => {
    const err = caught(() => findNccl({ env: { NCCL_HOME: '/nonexistent/nccl' }, ...isolated }));
    expect(err).toBeInstanceOf(LibraryNotFoundError);
    const e = err as LibraryNotFoundError;
    expect(e.library).toBe('libnccl');
    expect(e.attempts.length).toBe(6);
    expect(e.attempts.every((a) => a.reason === 'not present')).toBe(true);
    expect(e.message).toContain('/nonexistent/nccl/lib/libnccl.so.2 [NCCL_HOME]: not present');
  });
});
