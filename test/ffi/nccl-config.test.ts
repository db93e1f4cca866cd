// The hand-built ncclConfig_t and the NCCL enum values, checked against what gcc computes from the nccl.h definitions.
import { describe, expect, test } from 'bun:test';
import { FfiArgumentError } from '../../ffi/errors.ts';
import { formatNcclVersion, NcclDataType, NcclRedOp, NcclResult, ncclVersionCode } from '../../ffi/nccl/codes.ts';
import { buildNcclConfig, CONFIG_FIELDS, CONFIG_LAYOUT_VERSION, configSizeFor, NCCL_CONFIG_UNDEF_INT } from '../../ffi/nccl/config.ts';
import { buildFakeNccl } from './fake-nccl.ts';

const fake = buildFakeNccl();

describe('ncclConfig_t layout', () => {
  test('every field offset matches gcc offsetof on the header struct', () => {
    for (const f of CONFIG_FIELDS) expect({ field: f.name, offset: fake.configOffsetof(f.name) }).toEqual({ field: f.name, offset: f.offset });
    expect(fake.configOffsetof('noSuchField')).toBe(-1);
  });

  test('the newest layout has the header sizeof', () => {
    expect(configSizeFor(CONFIG_LAYOUT_VERSION)).toBe(fake.configSizeof());
    expect(fake.configSizeof()).toBe(120);
  });

  test('sizeof by library version follows the append history', () => {
    const table: Array<[number, number]> = [
      [ncclVersionCode(2, 14, 3), 24],
      [ncclVersionCode(2, 17, 1), 40],
      [ncclVersionCode(2, 21, 5), 48],
      [ncclVersionCode(2, 26, 2), 48],
      [ncclVersionCode(2, 27, 3), 72],
      [ncclVersionCode(2, 28, 3), 80],
      [ncclVersionCode(2, 29, 2), 88],
      [ncclVersionCode(2, 30, 7), 96],
      [ncclVersionCode(2, 31, 0), 120],
    ];
    for (const [version, size] of table) expect({ version, size: configSizeFor(version) }).toEqual({ version, size });
  });

  test('a built config carries size, magic, version, blocking and INT_MIN defaults', () => {
    const cfg = buildNcclConfig(23007, { blocking: 0, maxCTAs: 16, commName: 'x' });
    const view = new DataView(cfg.bytes.buffer);
    expect(cfg.bytes.byteLength).toBe(96);
    expect(view.getBigUint64(0, true)).toBe(96n);
    expect(view.getUint32(8, true)).toBe(0xcafebeef);
    expect(view.getUint32(12, true)).toBe(23007);
    expect(view.getInt32(16, true)).toBe(0);
    expect(view.getInt32(20, true)).toBe(NCCL_CONFIG_UNDEF_INT);
    expect(view.getInt32(28, true)).toBe(16);
    expect(view.getBigUint64(32, true)).toBe(0n); // netName unset → NULL
    expect(view.getBigUint64(48, true)).not.toBe(0n); // commName set
    expect(view.getInt32(92, true)).toBe(NCCL_CONFIG_UNDEF_INT);
  });

  test('a newer library gets the newest layout this code knows', () => {
    const cfg = buildNcclConfig(23203);
    expect(cfg.version).toBe(CONFIG_LAYOUT_VERSION);
    expect(cfg.bytes.byteLength).toBe(120);
  });

  test('a field the library version lacks is a typed error, not silently dropped', () => {
    expect(() => buildNcclConfig(22105, { nvlsCTAs: 4 })).toThrow(FfiArgumentError);
    expect(() => buildNcclConfig(22105, { blocking: 1.5 })).toThrow(FfiArgumentError);
    expect(buildNcclConfig(22105, { blocking: 0 }).bytes.byteLength).toBe(48);
  });
});

describe('NCCL enums and versions', () => {
  test('result, data type and reduction values match the header', () => {
    for (const [k, v] of Object.entries(NcclResult)) expect({ k, v: fake.enumValue(`nccl${k}`) }).toEqual({ k, v });
    for (const [k, v] of Object.entries(NcclDataType)) expect({ k, v: fake.enumValue(`nccl${k}`) }).toEqual({ k, v });
    for (const [k, v] of Object.entries(NcclRedOp)) expect({ k, v: fake.enumValue(`nccl${k}`) }).toEqual({ k, v });
  });

  test('NCCL_VERSION arithmetic switches scheme after 2.8', () => {
    expect(ncclVersionCode(2, 30, 7)).toBe(23007);
    expect(ncclVersionCode(2, 8, 4)).toBe(2804);
    expect(ncclVersionCode(2, 9, 6)).toBe(20906);
    expect(formatNcclVersion(23007)).toBe('2.30.7');
    expect(formatNcclVersion(2804)).toBe('2.8.4');
  });
});
