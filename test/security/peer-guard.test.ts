// The peer guard on its own clock: invalid gossip is counted per channel, a peer over the per-minute threshold is blocked and disconnected until blockMs passes, and a validator rejects exactly what the channel's decoder refuses.
import { describe, expect, test } from 'bun:test';
import { TopicValidatorResult } from '@libp2p/gossipsub';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { encode, WIRE_VERSION } from '../../mesh/wire.ts';
import { channelValidators, PeerGuard } from '../../node/p2p/peer-guard.ts';

function clock() {
  let ms = 1_000_000;
  return { now: () => ms, advance: (by: number) => (ms += by) };
}

describe('PeerGuard', () => {
  test('a peer is blocked on the first invalid message past the threshold within a minute, and disconnected', async () => {
    const time = clock();
    const hungUp: string[] = [];
    const guard = new PeerGuard({ invalidPerMinuteMax: 3, blockMs: 10_000 }, { nowMs: time.now, disconnect: async (p) => void hungUp.push(p) });
    for (let i = 0; i < 3; i++) expect(guard.invalid('p1', 'core', 'bad')).toBe(false);
    expect(guard.isBlocked('p1')).toBe(false);
    expect(guard.invalid('p1', 'core', 'bad')).toBe(true);
    expect(guard.isBlocked('p1')).toBe(true);
    expect(guard.isBlocked('p2')).toBe(false);
    expect(hungUp).toEqual(['p1']);
    expect(guard.counters).toEqual({ invalid: { core: 4 }, fromBlocked: 0, blocks: 1 });
    expect(guard.blocked()).toEqual(['p1']);
    time.advance(10_000);
    expect(guard.isBlocked('p1')).toBe(false);
    expect(guard.blocked()).toEqual([]);
  });

  test('invalid messages spread wider than a minute never add up to a block', () => {
    const time = clock();
    const guard = new PeerGuard({ invalidPerMinuteMax: 2, blockMs: 10_000 }, { nowMs: time.now });
    for (let i = 0; i < 20; i++) {
      expect(guard.invalid('p', 'core', 'bad')).toBe(false);
      time.advance(30_001);
    }
    expect(guard.counters.blocks).toBe(0);
  });

  test('bad thresholds are refused with a clear error', () => {
    expect(() => new PeerGuard({ invalidPerMinuteMax: -1 })).toThrow(/invalidPerMinuteMax/);
    expect(() => new PeerGuard({ blockMs: Number.NaN })).toThrow(/blockMs/);
  });

  test('the core channel validator accepts a well-formed core message and rejects garbage, counting it against the forwarder', async () => {
    const guard = new PeerGuard({ invalidPerMinuteMax: 100 });
    const validate = guard.validator('core', channelValidators.core!);
    const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
    const good = encode({ v: WIRE_VERSION, meshId: 'm', generation: 1, epoch: 0, body: { type: 'viewReq' } });
    const message = (data: Uint8Array) => ({ type: 'signed' as const, from: peer, topic: '/rankmesh/m/core', data, sequenceNumber: 1n, signature: new Uint8Array(), key: peer.publicKey! });
    expect(await validate(peer, message(good))).toBe(TopicValidatorResult.Accept);
    expect(await validate(peer, message(new TextEncoder().encode('{"v":1}')))).toBe(TopicValidatorResult.Reject);
    expect(await validate(peer, message(new Uint8Array([0xff, 0xfe])))).toBe(TopicValidatorResult.Reject);
    expect(guard.counters.invalid).toEqual({ core: 2 });
  });
});
