// The fuzz targets: every decoder of bytes that another node (or a client) controls, each as
// { name, input, open }. `input` mixes arbitrary bytes, arbitrary JSON and near-valid
// structures (a valid message with one field broken); `open` builds the component that
// decodes them, real and in process, with a view of the state a rejected input must leave
// as it was. Adding a decoder is one entry in `decoderTargets` (or `targets`).
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { encodeControl, decodeControl, LIFECYCLE_STATES, COMMAND_KINDS } from '../../mesh/lifecycle.ts';
import { decodeDemandMessage, decodePlanPayload, encodeDemandMessage, encodePlanPayload } from '../../mesh/demand.ts';
import { type PersistentState, RawNode } from '../../mesh/rawnode.ts';
import { type View, firstView, viewDigest } from '../../mesh/view.ts';
import { BALLOT_RANK_SPAN, decode as decodeCore, encode as encodeCore, WIRE_VERSION } from '../../mesh/wire.ts';
import { challengeSchema, helloSchema, HandshakeProtocolError, parseJson, proofSchema, resultSchema } from '../../ffi/comm/cpu/handshake.ts';
import { decodeForwardBatch, decodeForwardReplies, encodeForwardBatch, encodeForwardReplies, forwardRequestJson } from '../../node/ingress/wire.ts';
import { EventEmitter } from 'node:events';
import { AwakeBoard } from '../../node/demand/awake.ts';
import { DEMAND_CHANNEL, DemandService, type DemandDriver, type DemandTransport } from '../../node/demand/service.ts';
import { GossipProbe } from '../../node/p2p/gossip-probe.ts';
import { openStorage } from '../../node/storage/database.ts';
import { tempDir } from '../node/helpers.ts';
import { decodePeers, encodePeers } from '../../node/p2p/peer-exchange.ts';
import { channelValidators, PeerGuard } from '../../node/p2p/peer-guard.ts';
import { DataPlaneDirectory } from '../../node/rank/directory.ts';
import { decodeJoinState, encodeJoinState, JoinStateError } from '../../node/rank/join.ts';
import pino from 'pino';

/**
 * What one input did: taken, or refused with a reason. `counted`: the component counted the
 * refusal itself. `livenessOnly`: by design the refusal still recorded that the sender is up.
 */
export type Outcome = { accepted: true } | { accepted: false; reason: string; counted?: boolean; livenessOnly?: boolean };

export interface Harness<I = Uint8Array> {
  /** Feeds one input. Throwing is a failure: a decoder must refuse, not crash. */
  feed(input: I): Outcome | Promise<Outcome>;
  /** The state a refused input must leave unchanged (undefined: the decoder keeps none). */
  state(): unknown | Promise<unknown>;
  /** What a refused input must leave unchanged unless the outcome is livenessOnly (who was heard when). */
  liveness?(): unknown | Promise<unknown>;
  /** Called before each input: a harness whose state drifted (an accepted input) may reset. */
  prepare?(): void | Promise<void>;
  close?(): void | Promise<void>;
}

export interface FuzzTarget<I = Uint8Array> {
  readonly name: string;
  readonly input: fc.Arbitrary<I>;
  open(): Harness<I> | Promise<Harness<I>>;
}

const encoder = new TextEncoder();
const json = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

/**
 * Inputs for a decoder whose valid messages look like `valid`: a third arbitrary bytes, a
 * third arbitrary JSON, a third a valid message with one change — a field set to junk, a key
 * removed or added, one byte flipped, or the text cut short. Some stay valid; most do not.
 */
export function inputsLike(valid: fc.Arbitrary<unknown>, encode: (value: unknown) => Uint8Array = json): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.jsonValue({ maxDepth: 4 }).map((v) => json(v)),
    fc.tuple(valid, fc.nat(), fc.jsonValue({ maxDepth: 2 }), fc.integer({ min: 0, max: 5 }), fc.nat()).map(([value, pick, junk, op, pos]) => {
      const copy = structuredClone(value) as unknown;
      if (op === 0) return encode(copy);
      if (op >= 4) {
        const bytes = encode(copy).slice();
        if (bytes.length === 0) return bytes;
        if (op === 4) {
          const i = pos % bytes.length;
          bytes[i] = bytes[i]! ^ (1 << (pos % 8));
          return bytes;
        }
        return bytes.subarray(0, pos % bytes.length);
      }
      const paths = pathsOf(copy);
      const path = paths[pick % paths.length]!;
      // Removing the root leaves nothing: encode null, which every encoder can take.
      return encode(edit(copy, path, op, junk) ?? null);
    }),
  );
}

/** Every path into a JSON value (arrays and objects), the root included as []. */
function pathsOf(value: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix);
  if (Array.isArray(value)) value.forEach((v, i) => pathsOf(v, [...prefix, i], out));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) pathsOf(v, [...prefix, k], out);
  return out;
}

/** op 1: set the value at path to junk; 2: remove it; 3: add an unexpected key beside it. */
function edit(root: unknown, path: (string | number)[], op: number, junk: unknown): unknown {
  if (path.length === 0) return op === 1 ? junk : op === 2 ? undefined : { ...(root as object), extra: junk };
  let parent = root as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (op === 1) parent[last] = junk;
  else if (op === 2) {
    if (Array.isArray(parent)) parent.splice(last as number, 1);
    else delete parent[last];
  } else if (!Array.isArray(parent)) parent.extra = junk;
  else parent.push(junk);
  return root;
}

/** A decoder with no state of its own: it must return a result or a reason, or throw only `typed`. */
function pureDecoder(
  name: string,
  input: fc.Arbitrary<Uint8Array>,
  decode: (bytes: Uint8Array) => { ok: true } | { ok: false; reason: string },
): FuzzTarget {
  return { name, input, open: () => ({ feed: (bytes) => toOutcome(decode(bytes)), state: () => undefined }) };
}

function toOutcome(r: { ok: true } | { ok: false; reason: string }): Outcome {
  return r.ok ? { accepted: true } : { accepted: false, reason: r.reason };
}

/** Runs a throwing decoder: its own error type is a refusal, anything else a crash. */
function refusing(typed: new (...args: never[]) => Error, run: () => unknown): { ok: true } | { ok: false; reason: string } {
  try {
    run();
    return { ok: true };
  } catch (err) {
    if (err instanceof typed) return { ok: false, reason: err.message };
    throw err;
  }
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const hex64 = fc.stringMatching(/^[0-9a-f]{64}$/);
const peerName = fc.constantFrom('a', 'b', 'c', 's', 'x');
const bootName = fc.constantFrom('b-a', 'b-b', 'b-c', 'b-s', 'b-x', 'b-b2');
const incarnation = fc.record({ peerId: peerName, bootId: bootName });
const commandId = fc.stringMatching(/^[A-Za-z0-9._:+=-]{1,12}$/);
const demandRecord = fc.record({
  id: fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/),
  pipeline: fc.constantFrom('chat', 'rl.rollout'),
  steps: fc.integer({ min: 1, max: 100 }),
  priority: fc.nat(10),
  done: fc.dictionary(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.nat(50), { maxKeys: 2 }),
  closed: fc.boolean(),
});

// ---- the core protocol (mesh/wire.ts into a RawNode) ----

const meshId = 'm';
/** Ranks a, b, c and the spare s; the node under test is a, rank 0. */
const coreView: View = { ...firstView(meshId, 1, [{ peerId: 'a', bootId: 'b-a' }, { peerId: 'b', bootId: 'b-b' }, { peerId: 'c', bootId: 'b-c' }]), spares: [{ peerId: 's', bootId: 'b-s' }] };
const coreDigest = viewDigest(coreView);

const change = fc.record({
  remove: fc.array(incarnation, { maxLength: 2 }),
  admit: fc.array(fc.record({ rank: fc.integer({ min: -1, max: 4 }), peerId: peerName, bootId: bootName }), { maxLength: 2 }),
  addSpares: fc.array(incarnation, { maxLength: 2 }),
  close: fc.boolean(),
});
const ballot = fc.oneof(fc.constantFrom(0, BALLOT_RANK_SPAN, BALLOT_RANK_SPAN + 1, BALLOT_RANK_SPAN + 2, 2 * BALLOT_RANK_SPAN + 1), fc.nat());
const coreBody = fc.oneof(
  fc.record({
    type: fc.constant('hb'),
    bootId: bootName,
    role: fc.constantFrom('forming', 'member', 'spare', 'outsider', 'gateway'),
    ready: fc.boolean(),
    rememberedRank: fc.integer({ min: -1, max: 4 }),
    digest: fc.constantFrom(coreDigest, 0, 12345),
    reports: fc.array(incarnation, { maxLength: 3 }),
    closeRequested: fc.boolean(),
    lc: fc.option(fc.record({ state: fc.constantFrom(...LIFECYCLE_STATES), version: fc.nat(6), applied: fc.array(commandId, { maxLength: 3 }) }), { nil: undefined }),
  }),
  fc.record({ type: fc.constant('form'), bootId: bootName, worldSize: fc.integer({ min: 1, max: 4 }), round: fc.nat(3), digest: fc.option(fc.stringMatching(/^[0-9a-f]{32}$/), { nil: null }) }),
  fc.record({ type: fc.constant('vote'), ballot, change }),
  fc.record({ type: fc.constant('prepare'), ballot }),
  fc.record({ type: fc.constant('promise'), ballot, votedBallot: fc.integer({ min: -1, max: 3000 }), voted: fc.option(change, { nil: null }) }),
  fc.record({ type: fc.constant('accept'), ballot, change }),
  fc.record({ type: fc.constant('decide'), change }),
  fc.record({ type: fc.constant('arrive'), name: fc.constantFrom('control', 'plan', 'warm', 'join'), seq: fc.integer({ min: 1, max: 3 }), payload: fc.oneof(fc.string({ maxLength: 40 }), fc.constant(encodeControl({ version: 0, state: 'RUNNING', trusted: true, done: false, commands: [{ kind: 'PAUSE', id: 'x.1' }], applied: [] }))) }),
  fc.record({ type: fc.constant('cmd'), kind: fc.constantFrom(...COMMAND_KINDS), id: commandId }),
  fc.record({ type: fc.constant('viewReq') }),
  fc.record({
    type: fc.constant('viewResp'),
    view: fc.record({ meshId: fc.constantFrom(meshId, 'other'), generation: fc.integer({ min: 0, max: 2 }), epoch: fc.integer({ min: 0, max: 3 }), worldSize: fc.constant(3), ranks: fc.array(fc.option(incarnation, { nil: null }), { minLength: 3, maxLength: 3 }), spares: fc.array(incarnation, { maxLength: 2 }), closed: fc.boolean() }),
  }),
);
/** Mostly `usual`, sometimes one of `rare`. */
const mostly = <T>(usual: T, ...rare: T[]) => fc.oneof({ arbitrary: fc.constant(usual), weight: 12 }, { arbitrary: fc.constantFrom(...rare), weight: 1 });
const coreMessage = fc.record({
  v: mostly(WIRE_VERSION, 2),
  meshId: mostly(meshId, 'other'),
  generation: mostly(1, 0, 2),
  epoch: mostly(coreView.epoch, 0, 2),
  body: coreBody,
});

/** Refusals that by design still record that the sender's process is up, and nothing else. */
const LIVENESS_ONLY = new Set(['stale message', 'future message', 'heartbeat with another view of this epoch']);

function coreHarness(): Harness {
  const senders = ['b', 'c', 's', 'x', 'a'];
  let core = freshCore();
  return {
    prepare() {
      // An accepted decision or view moves the node on (and leaves work for its next tick or
      // step, which would show up in the next input's comparison): start again from the view.
      if (core.view() !== coreView || core.phase() !== 'member') core = freshCore();
    },
    feed(bytes) {
      const decoded = decodeCore(bytes);
      // The driver counts these as 'malformed' and never steps the core.
      if (!decoded.ok) return { accepted: false, reason: decoded.reason };
      // The sender follows from the bytes, so a replay is exact.
      const from = senders[createHash('sha256').update(bytes).digest()[0]! % senders.length]!;
      const before = { stale: core.counters.stale, future: core.counters.future, rejected: { ...core.counters.rejected } };
      core.step(from, decoded.msg);
      if (core.hasReady()) {
        core.ready();
        core.advance();
      }
      let reason: string | undefined;
      if (core.counters.stale > before.stale) reason = 'stale message';
      else if (core.counters.future > before.future) reason = 'future message';
      else reason = Object.keys(core.counters.rejected).find((k) => core.counters.rejected[k] !== before.rejected[k]);
      if (reason === undefined) return { accepted: true };
      return { accepted: false, reason, counted: true, livenessOnly: LIVENESS_ONLY.has(reason) };
    },
    state: () => ({ view: core.view(), phase: core.phase(), lifecycle: core.lifecycle(), barriers: core.barriers(), pendingChange: core.pendingChange() }),
    liveness: () => core.members(),
  };
}

function freshCore(self = 'a'): RawNode {
  const restored: PersistentState = { meshId, generation: 1, view: coreView, rememberedRank: coreView.ranks.findIndex((h) => h?.peerId === self), acceptor: null, form: null, lifecycle: { generation: 1, state: 'RUNNING', version: 0 } };
  const core = new RawNode({ meshId, worldSize: 3, self, bootId: `b-${self}`, seed: 1 }, restored);
  core.ready();
  core.advance();
  return core;
}

// ---- the data-plane directory (claims gossiped on their own channel) ----

function directoryHarness(): Harness {
  let deliver: ((from: string, bytes: Uint8Array) => void) | undefined;
  const directory = new DataPlaneDirectory({
    transport: {
      subscribe: (_channel, handler) => {
        deliver = handler;
        return () => (deliver = undefined);
      },
      publish: async () => ({ recipients: 0 }),
      onPeer: () => () => undefined,
    },
    self: { peerId: 'self', bootId: 'boot', host: '127.0.0.1', port: 1 },
    announceIntervalMs: 3_600_000,
    log: pino({ level: 'silent' }),
  });
  directory.start();
  const ignoredTotal = () => Object.values(directory.ignored).reduce((a, b) => a + b, 0);
  const known = () => ['p', 'q'].map((peerId) => ({ peerId, at: directory.lookup({ peerId, bootId: 'b1' }) ?? null, build: directory.buildOf({ peerId, bootId: 'b1' }) }));
  return {
    feed(bytes) {
      const ignoredBefore = { ...directory.ignored };
      const total = ignoredTotal();
      deliver?.('p', bytes);
      if (ignoredTotal() === total) return { accepted: true };
      const reason = Object.keys(directory.ignored).find((k) => directory.ignored[k as keyof typeof ignoredBefore] !== ignoredBefore[k as keyof typeof ignoredBefore]) ?? 'ignored';
      return { accepted: false, reason, counted: true };
    },
    state: known,
    close: () => directory.stop(),
  };
}

const claim = fc.record({
  v: fc.constant(1),
  peerId: fc.constantFrom('p', 'q'),
  bootId: fc.constant('b1'),
  host: fc.constantFrom('127.0.0.1', 'localhost'),
  port: fc.integer({ min: 1, max: 65535 }),
  seq: fc.nat(10),
  build: fc.option(fc.record({ generation: fc.nat(3), epoch: fc.nat(3), attempt: fc.nat(3) }), { nil: null }),
});

// ---- the demand service (gossiped records and summaries, and pull answers) ----

/**
 * A demand service over a real SQLite store, as a spare of the core's view (it arrives at no
 * plan round). Its transport is in-process: gossip is delivered by hand, and a pull is
 * answered with `pullAnswer` (or fails when that is null).
 */
async function demandHarness(via: 'gossip' | 'pull'): Promise<Harness> {
  const dir = tempDir('rankmesh-fuzz-demand-');
  const storage = openStorage(dir.path);
  const handlers = new Map<string, (from: string, bytes: Uint8Array) => void>();
  const deliver = (from: string, bytes: Uint8Array) => handlers.get(DEMAND_CHANNEL)?.(from, bytes);
  let pullAnswer: Uint8Array | null = null;
  let pullDone: Promise<unknown> = Promise.resolve();
  const transport: DemandTransport = {
    subscribe: (channel, handler) => (handlers.set(channel, handler), () => handlers.delete(channel)),
    publish: async () => ({ recipients: 0 }),
    handle: async () => undefined,
    request: async () => {
      const answer = pullAnswer;
      const result = answer === null ? { ok: false as const, error: 'unreachable' as const, message: 'no peer' } : { ok: true as const, bytes: answer };
      pullDone = Promise.resolve(result);
      return result;
    },
  };
  const events = new EventEmitter();
  const core = freshCore('s');
  const driver = {
    core,
    on: (name: string, listener: (...args: unknown[]) => void) => events.on(name, listener),
    off: (name: string, listener: (...args: unknown[]) => void) => events.off(name, listener),
    arrive: () => {
      throw new Error('a spare arrives at no plan round');
    },
  } as unknown as DemandDriver;
  const service = new DemandService({ meshId, peerId: 'self-peer-id', db: storage.db, transport, driver, log: pino({ level: 'silent' }), pollMs: 3_600_000, roundIntervalMs: 3_600_000, settleMs: 0, syncIntervalMs: 3_600_000, requestTimeoutMs: 1000 });
  await service.start();
  const rejectedTotal = () => Object.values(service.counters.rejected).reduce((a, b) => a + b, 0);
  const summary = (digest: string) => encodeDemandMessage({ type: 'summary', meshId, digest, records: 1, plan: null });
  let peers = 0;
  return {
    async feed(bytes) {
      const before = { ...service.counters.rejected };
      const total = rejectedTotal();
      if (via === 'gossip') {
        pullAnswer = null;
        deliver('p', bytes);
      } else {
        // A summary whose digest differs makes the service pull from its sender (a new peer
        // each time: one pull per peer per sync interval); the answer is the input.
        pullAnswer = bytes;
        deliver(`peer-${++peers}`, summary('ffff'));
      }
      // The pull's continuation runs once its request resolves: one turn of the event loop.
      await pullDone;
      await new Promise((resolve) => setImmediate(resolve));
      if (rejectedTotal() === total) return { accepted: true };
      const reason = Object.keys(service.counters.rejected).find((k) => service.counters.rejected[k] !== before[k]) ?? 'rejected';
      // A pull answer is a batch: a record refused inside a well-formed answer (the book is
      // full, say) leaves the others taken. Only a refusal of the answer itself takes nothing.
      if (via === 'pull' && reason !== 'malformed pull') return { accepted: true };
      return { accepted: false, reason, counted: true };
    },
    state: () => ({ records: service.records(), digest: service.digest(), plan: service.plans.current() }),
    close() {
      service.stop();
      storage.close();
      dir.remove();
    },
  };
}

const demandRecordMessage = (r: unknown) => JSON.parse(text(encodeDemandMessage({ type: 'record', meshId, record: r as never }))) as unknown;
const pullAnswer = fc.record({
  records: fc.array(demandRecord, { maxLength: 3 }),
  plan: fc.option(fc.record({ generation: fc.nat(2), epoch: fc.nat(3), seq: fc.integer({ min: 1, max: 3 }), assignment: fc.array(fc.tuple(fc.nat(3), fc.option(fc.constantFrom('chat', 'default'), { nil: null })), { maxLength: 4 }), demand: fc.array(fc.record({ pipeline: fc.constantFrom('chat'), remaining: fc.nat(9), priority: fc.nat(3) }), { maxLength: 2 }) }), { nil: null }),
});

// ---- the awake board (ranks report which pipeline they serve) ----

function awakeHarness(): Harness {
  let deliver: ((from: string, bytes: Uint8Array) => void) | undefined;
  const board = new AwakeBoard({ meshId, peerId: 'self', transport: { subscribe: (_c, handler) => ((deliver = handler), () => (deliver = undefined)), publish: async () => ({ recipients: 0 }) }, intervalMs: 3_600_000, log: pino({ level: 'silent' }) });
  board.start();
  const ignored = () => board.ignored.malformed + board.ignored.stale;
  return {
    feed(bytes) {
      const before = { ...board.ignored };
      const total = ignored();
      deliver?.('p', bytes);
      if (ignored() === total) return { accepted: true };
      return { accepted: false, reason: board.ignored.malformed > before.malformed ? 'malformed' : 'stale', counted: true };
    },
    // What the board answers about the sender's ranks, for each pipeline the inputs name.
    state: () => [null, 'chat', 'default'].map((pipeline) => board.awake(pipeline as string, [0, 1, 2, 3], null, () => 'p')),
    close: () => board.stop(),
  };
}

const awakeReport = fc.record({
  v: fc.constant(1),
  meshId: mostly(meshId, 'other'),
  boot: fc.nat(2),
  seq: fc.nat(5),
  rank: fc.nat(3),
  pipeline: fc.option(fc.constantFrom('chat', 'default'), { nil: null }),
  round: fc.option(fc.record({ generation: fc.nat(2), epoch: fc.nat(2), seq: fc.nat(2) }), { nil: null }),
  serving: fc.boolean(),
});

// ---- the gossip probe (a diagnostic channel) ----

const probeIds = ['p1.1', 'p1.2', 'q.7'];

/**
 * The probe keeps no count of what it refuses, so a refusal is what leaves no receipt: for
 * this target the property says no input throws, and no input touches another probe's receipt.
 */
function probeHarness(): Harness {
  let deliver: ((from: string, bytes: Uint8Array) => void) | undefined;
  const probe = new GossipProbe({ subscribe: (_c, handler) => ((deliver = handler), () => (deliver = undefined)), publish: async () => ({ recipients: 0 }) }, 'self', pino({ level: 'silent' }));
  probe.start();
  const receipts = () => probeIds.map((id) => probe.receipt(id)?.sentAtMs ?? null);
  return {
    feed(bytes) {
      const before = JSON.stringify(receipts());
      deliver?.('p', bytes);
      return JSON.stringify(receipts()) !== before ? { accepted: true } : { accepted: false, reason: 'no receipt' };
    },
    state: receipts,
    close: () => probe.stop(),
  };
}

// ---- the peer guard's gossip validators (what gossipsub asks before delivering) ----

function guardHarness(channel: string): Harness {
  const guard = new PeerGuard({ invalidPerMinuteMax: Number.MAX_SAFE_INTEGER });
  const check = channelValidators[channel]!;
  return {
    feed(bytes) {
      const before = guard.counters.invalid[channel] ?? 0;
      const reason = check(bytes);
      if (reason === null) return { accepted: true };
      guard.invalid('p', channel, reason);
      return { accepted: false, reason, counted: (guard.counters.invalid[channel] ?? 0) === before + 1 };
    },
    state: () => guard.blocked(),
  };
}

// ---- the list ----

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const joinState = fc.record({
  generation: fc.nat(3),
  epoch: fc.nat(3),
  sourceRank: fc.nat(3),
  meshRanks: fc.array(fc.nat(3), { maxLength: 4 }),
  engine: fc.record({ placement: fc.array(fc.nat(3), { maxLength: 4 }), iteration: fc.nat(100) }),
  modelDigest: hex64,
});
/** Join state is checksummed: break the state inside and checksum it again, so the fields are what is tested. */
const joinStateInput = fc.oneof(
  inputsLike(joinState, (state) => encodeJoinState(state as never)),
  inputsLike(joinState, (state) => {
    const body = JSON.stringify(state);
    return json({ body, sha256: sha256(body) });
  }),
);


/** Every decoder that takes bytes from another node, the peer guard's validators included. */
export const decoderTargets: FuzzTarget[] = [
  // Half of these are well-formed, so most inputs reach the core's own checks (roles, epochs, ballots).
  { name: 'core message → RawNode', input: fc.oneof(inputsLike(coreMessage), coreMessage.map((m) => json(m))), open: coreHarness },
  pureDecoder('control round payload', inputsLike(fc.record({ v: fc.nat(5), s: fc.constantFrom(...LIFECYCLE_STATES), t: fc.nat(1), d: fc.nat(1), c: fc.array(fc.tuple(fc.constantFrom(...COMMAND_KINDS), commandId), { maxLength: 3 }), a: fc.array(commandId, { maxLength: 3 }) })), (bytes) =>
    decodeControl(text(bytes)) ? { ok: true } : { ok: false, reason: 'malformed control payload' },
  ),
  pureDecoder('plan round payload', inputsLike(fc.constant(null).map(() => JSON.parse(encodePlanPayload('chat', [{ pipeline: 'chat', remaining: 5, priority: 1 }], 'abcd')) as unknown)), (bytes) =>
    decodePlanPayload(text(bytes)) ? { ok: true } : { ok: false, reason: 'malformed plan payload' },
  ),
  pureDecoder('demand gossip', inputsLike(demandRecord.map((r) => JSON.parse(text(encodeDemandMessage({ type: 'record', meshId, record: r }))) as unknown)), (bytes) => toOutcomeResult(decodeDemandMessage(bytes))),
  { name: 'data-plane claim → directory', input: inputsLike(claim), open: directoryHarness },
  pureDecoder('peer exchange answer', inputsLike(fc.array(fc.record({ peerId: fc.string({ minLength: 1, maxLength: 20 }), addresses: fc.array(fc.constant('/ip4/127.0.0.1/tcp/1'), { maxLength: 2 }) }), { maxLength: 3 }).map((p) => JSON.parse(text(encodePeers(p))) as unknown)), (bytes) => {
    const r = decodePeers(bytes);
    return r instanceof Error ? { ok: false, reason: r.message } : { ok: true };
  }),
  pureDecoder('ingress forward batch', inputsLike(fc.array(fc.record({ id: fc.string({ minLength: 1, maxLength: 10 }), pipeline: fc.constant('chat'), input: fc.array(fc.nat(100), { minLength: 1, maxLength: 4 }) }), { minLength: 1, maxLength: 3 }).map((rs) => JSON.parse(text(encodeForwardBatch(rs.map(forwardRequestJson)))) as unknown)), (bytes) => orReason(decodeForwardBatch(bytes))),
  pureDecoder('ingress forward replies', inputsLike(fc.subarray([{ kind: 'done' as const, id: 'r1', output: [1, 2], rank: 0, epoch: 1 }, { kind: 'pending' as const, id: 'r2' }, { kind: 'error' as const, id: 'r3', code: 'busy' as const, message: 'queue full', retryAfterS: 1 }]).map((rs) => JSON.parse(text(encodeForwardReplies(rs))) as unknown)), (bytes) => orReason(decodeForwardReplies(bytes))),
  pureDecoder('join state', joinStateInput, (bytes) => refusing(JoinStateError, () => decodeJoinState(bytes))),
  pureDecoder('data-plane handshake hello', inputsLike(fc.record({ v: fc.constant(1), meshId: fc.constant(meshId), generation: fc.nat(3), epoch: fc.nat(3), fromMeshRank: fc.nat(3), toMeshRank: fc.nat(3), nonce: hex64 })), (bytes) => refusing(HandshakeProtocolError, () => parseJson(helloSchema, bytes))),
  pureDecoder('data-plane handshake challenge', inputsLike(fc.record({ nonce: hex64 })), (bytes) => refusing(HandshakeProtocolError, () => parseJson(challengeSchema, bytes))),
  pureDecoder('data-plane handshake proof', inputsLike(fc.record({ proof: hex64 })), (bytes) => refusing(HandshakeProtocolError, () => parseJson(proofSchema, bytes))),
  pureDecoder('data-plane handshake result', inputsLike(fc.oneof(fc.record({ ok: fc.constant(true), proof: hex64 }), fc.record({ ok: fc.constant(false), code: fc.constantFrom('auth', 'busy'), reason: fc.string({ maxLength: 20 }) }))), (bytes) => refusing(HandshakeProtocolError, () => parseJson(resultSchema, bytes))),
  { name: 'demand gossip → demand service', input: inputsLike(fc.oneof(demandRecord.map(demandRecordMessage), fc.constant(JSON.parse(text(encodeDemandMessage({ type: 'summary', meshId, digest: 'abcd', records: 2, plan: { generation: 1, epoch: 1, seq: 1 } }))) as unknown))), open: () => demandHarness('gossip') },
  { name: 'demand pull answer → demand service', input: inputsLike(pullAnswer), open: () => demandHarness('pull') },
  { name: 'awake report → awake board', input: inputsLike(awakeReport), open: awakeHarness },
  { name: 'gossip probe', input: inputsLike(fc.record({ id: fc.constantFrom(...probeIds), sentAtMs: fc.double({ min: 0, max: 2e12, noNaN: true }) })), open: probeHarness },
  ...Object.keys(channelValidators).map((channel) => ({
    name: `gossip validator '${channel}' → peer guard`,
    input: channel === 'core' ? inputsLike(coreMessage) : fc.oneof(inputsLike(demandRecord.map((r) => JSON.parse(text(encodeDemandMessage({ type: 'record', meshId, record: r }))) as unknown)), fc.uint8Array({ maxLength: 200 })),
    open: () => guardHarness(channel),
  })),
];

function toOutcomeResult(r: { ok: true } | { ok: false; reason: string }): { ok: true } | { ok: false; reason: string } {
  return r.ok ? { ok: true } : { ok: false, reason: r.reason };
}

function orReason(r: object | string): { ok: true } | { ok: false; reason: string } {
  return typeof r === 'string' ? { ok: false, reason: r } : { ok: true };
}
