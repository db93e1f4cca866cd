// The wire format: every message kind round-trips, and the decoder rejects bad sizes, ranges, types and versions with a reason.
import { describe, expect, test } from 'bun:test';
import { MESSAGE_BYTES_MAX, type Message, decode, encode } from '../../mesh/wire.ts';

const env = (body: Message['body'], epoch = 3): Message => ({ v: 1, meshId: 'mesh-1', generation: 2, epoch, body });
const inc = { peerId: '12D3KooWabc', bootId: 'b1' };
const change = { remove: [inc], admit: [{ rank: 3, peerId: 'p9', bootId: 'b7' }], addSpares: [], close: false };

const samples: Message[] = [
  env({ type: 'hb', bootId: 'b1', role: 'member', ready: true, rememberedRank: 2, digest: 4294967295, reports: [inc], closeRequested: false }),
  env({ type: 'form', bootId: 'b1', worldSize: 4, round: 3, digest: '0123456789abcdef0123456789abcdef' }, 0),
  env({ type: 'form', bootId: 'b1', worldSize: 4, round: 0, digest: null }, 0),
  env({ type: 'vote', ballot: 0, change }),
  env({ type: 'prepare', ballot: 2049 }),
  env({ type: 'promise', ballot: 2049, votedBallot: -1, voted: null }),
  env({ type: 'promise', ballot: 2049, votedBallot: 0, voted: change }),
  env({ type: 'accept', ballot: 2049, change }),
  env({ type: 'decide', change }),
  env({ type: 'hb', bootId: 'b1', role: 'spare', ready: false, rememberedRank: -1, digest: 7, reports: [], closeRequested: false, lc: { state: 'PAUSED', version: 4, applied: ['b1.1', 'b2.7'] } }),
  env({ type: 'arrive', name: 'control', seq: 3, payload: '{"v":1}' }),
  env({ type: 'cmd', kind: 'SUSPEND', id: 'b1.12' }),
  env({ type: 'viewReq' }),
  env({ type: 'viewResp', view: { meshId: 'mesh-1', generation: 2, epoch: 3, worldSize: 2, ranks: [inc, null], spares: [], closed: false } }),
];

describe('wire', () => {
  for (const msg of samples) {
    test(`${msg.body.type} round-trips`, () => {
      const r = decode(encode(msg));
      expect(r).toEqual({ ok: true, msg });
    });
  }

  test('a heartbeat of a 128-node mesh with 16 reports and a full lifecycle record stays under 8 KB', () => {
    const reports = Array.from({ length: 16 }, (_, i) => ({ peerId: `12D3KooW${'x'.repeat(44)}${i}`, bootId: 'b'.repeat(16) }));
    const lc = { state: 'SUSPENDING' as const, version: 2 ** 31 - 1, applied: Array.from({ length: 8 }, (_, i) => `${'c'.repeat(60)}.${i}`) };
    const bytes = encode(env({ type: 'hb', bootId: 'b'.repeat(16), role: 'member', ready: true, rememberedRank: 127, digest: 1, reports, closeRequested: false, lc }));
    expect(bytes.byteLength).toBeLessThan(8 * 1024);
  });

  const bad: [name: string, text: string, reason: RegExp][] = [
    ['not JSON', '{nope', /not UTF-8 JSON/],
    ['another version', JSON.stringify({ ...samples[12], v: 2 }), /unsupported wire version 2/],
    ['negative epoch', JSON.stringify({ ...samples[12], epoch: -1 }), /^epoch:/],
    ['fractional generation', JSON.stringify({ ...samples[12], generation: 1.5 }), /^generation:/],
    ['unknown type', JSON.stringify({ ...samples[12], body: { type: 'shout' } }), /^body/],
    ['extra field', JSON.stringify({ ...samples[12], body: { type: 'viewReq', x: 1 } }), /^body/],
    ['bad peerId characters', JSON.stringify(env({ type: 'decide', change: { ...change, remove: [{ peerId: 'a b', bootId: 'b' }] } })), /^body\.change\.remove\.0\.peerId/],
    ['rank out of range', JSON.stringify(env({ type: 'decide', change: { ...change, admit: [{ rank: 5000, peerId: 'p', bootId: 'b' }] } })), /^body\.change\.admit\.0\.rank/],
    ['ranks shorter than worldSize', JSON.stringify(env({ type: 'viewResp', view: { meshId: 'm', generation: 1, epoch: 1, worldSize: 3, ranks: [null], spares: [], closed: false } })), /worldSize/],
    ['barrier seq 0', JSON.stringify(env({ type: 'arrive', name: 'x', seq: 0, payload: '' })), /^body\.seq/],
    ['barrier payload over the limit', JSON.stringify(env({ type: 'arrive', name: 'x', seq: 1, payload: 'x'.repeat(4096) })), /^body\.payload/],
    ['unknown command', JSON.stringify(env({ type: 'cmd', kind: 'HALT', id: 'a.1' } as never)), /^body\.kind/],
    ['command id with a space', JSON.stringify(env({ type: 'cmd', kind: 'STOP', id: 'a 1' })), /^body\.id/],
    ['unknown lifecycle state', JSON.stringify(env({ ...(samples[0]!.body as object), lc: { state: 'HALTED', version: 1, applied: [] } } as never)), /^body\.lc\.state/],
    ['role of the wrong type', JSON.stringify(env({ ...(samples[0]!.body as object), role: 7 } as never)), /^body\.role/],
  ];
  for (const [name, text, reason] of bad) {
    test(`rejects ${name} with a reason`, () => {
      const r = decode(new TextEncoder().encode(text));
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.reason).toMatch(reason);
    });
  }

  test('rejects oversized messages before parsing', () => {
    const r = decode(new Uint8Array(MESSAGE_BYTES_MAX + 1));
    expect(r).toEqual({ ok: false, reason: expect.stringContaining('limit') });
  });

  test('rejects bytes that are not UTF-8', () => {
    expect(decode(new Uint8Array([0xff, 0xfe, 0x7b])).ok).toBe(false);
  });
});
