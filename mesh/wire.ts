/**
 * The wire format of the mesh protocol: one versioned schema for every message, an encoder
 * and a validating decoder. docs/PROTOCOL.md describes the same schema for other
 * implementations.
 *
 * Encoding: UTF-8 JSON of an envelope `{ v, meshId, generation, epoch, body }`. JSON keeps
 * the format readable and easy to implement elsewhere; the decoder checks every size,
 * range and type and rejects with a reason, so nothing malformed ever reaches the core.
 */
import { z } from 'zod';
import { BARRIER_PAYLOAD_BYTES_MAX } from './barrier.ts';
import { COMMAND_KINDS, LIFECYCLE_STATES } from './lifecycle.ts';

export const WIRE_VERSION = 1;
/** Largest encoded message accepted (a full view of 1024 ranks fits with room to spare). */
export const MESSAGE_BYTES_MAX = 256 * 1024;
export const WORLD_SIZE_MAX = 1024;
/** Ballots are round × BALLOT_RANK_SPAN + proposer rank; round 0 is the fast round. */
export const BALLOT_RANK_SPAN = WORLD_SIZE_MAX;
const LIST_MAX = 1024;
/** Applied command ids a heartbeat carries at most. */
export const LIFECYCLE_APPLIED_IN_HEARTBEAT_MAX = 8;
const U31 = 2 ** 31 - 1;

const id = (maxChars: number) =>
  z
    .string()
    .min(1)
    .max(maxChars)
    .regex(/^[A-Za-z0-9._:+=-]+$/, 'only letters, digits and . _ : + = -');
const count = z.int().min(0).max(U31);

const incarnationSchema = z.strictObject({ peerId: id(128), bootId: id(64) });

const changeSchema = z.strictObject({
  remove: z.array(incarnationSchema).max(LIST_MAX).readonly(),
  admit: z
    .array(z.strictObject({ rank: z.int().min(0).max(WORLD_SIZE_MAX - 1), peerId: id(128), bootId: id(64) }))
    .max(WORLD_SIZE_MAX)
    .readonly(),
  addSpares: z.array(incarnationSchema).max(LIST_MAX).readonly(),
  close: z.boolean(),
});

const viewSchema = z
  .strictObject({
    meshId: id(128),
    generation: count,
    epoch: count,
    worldSize: z.int().min(1).max(WORLD_SIZE_MAX),
    ranks: z.array(incarnationSchema.nullable()).max(WORLD_SIZE_MAX).readonly(),
    spares: z.array(incarnationSchema).max(LIST_MAX).readonly(),
    closed: z.boolean(),
  })
  .refine((v) => v.ranks.length === v.worldSize, 'ranks must have worldSize entries');

/** 'gateway': a node that routes requests and never holds a rank (see CoreConfig.role). */
const roleSchema = z.enum(['forming', 'member', 'spare', 'outsider', 'gateway']);
const lifecycleStateSchema = z.enum(LIFECYCLE_STATES);
const commandKindSchema = z.enum(COMMAND_KINDS);

/** The agreed lifecycle as a node holds it, carried in heartbeats so non-ranks learn it. */
const lifecycleSchema = z.strictObject({
  state: lifecycleStateSchema,
  version: count,
  /** The last command ids this node saw applied (or dropped) in control rounds. */
  applied: z.array(id(64)).max(LIFECYCLE_APPLIED_IN_HEARTBEAT_MAX).readonly(),
});

const bodySchema = z.discriminatedUnion('type', [
  /** Gossip, every heartbeat interval: liveness, state and this node's reports. */
  z.strictObject({
    type: z.literal('hb'),
    bootId: id(64),
    role: roleSchema,
    ready: z.boolean(),
    rememberedRank: z.int().min(-1).max(WORLD_SIZE_MAX - 1),
    digest: z.int().min(0).max(2 ** 32 - 1),
    reports: z.array(incarnationSchema).max(LIST_MAX).readonly(),
    closeRequested: z.boolean(),
    /** The sender's lifecycle; optional so that heartbeats without it still decode. */
    lc: lifecycleSchema.optional(),
  }),
  /** Gossip while forming: this node's acceptance (or pass, value null) in a formation round. */
  z.strictObject({
    type: z.literal('form'),
    bootId: id(64),
    worldSize: z.int().min(1).max(WORLD_SIZE_MAX),
    round: count,
    /** Digest (formDigest) of the accepted first view; null: this node passes this round. */
    digest: z.string().regex(/^[0-9a-f]{32}$/, '32 lowercase hex digits').nullable(),
  }),
  /** Gossip: an acceptor's vote (fast round: ballot 0) for a change of the current epoch. */
  z.strictObject({ type: z.literal('vote'), ballot: count, change: changeSchema }),
  /** Gossip: phase 1a of a classic round. */
  z.strictObject({ type: z.literal('prepare'), ballot: count }),
  /** Direct to the proposer: phase 1b, with the highest vote this acceptor cast (-1: none). */
  z.strictObject({
    type: z.literal('promise'),
    ballot: count,
    votedBallot: z.int().min(-1).max(U31),
    voted: changeSchema.nullable(),
  }),
  /** Gossip: phase 2a of a classic round. */
  z.strictObject({ type: z.literal('accept'), ballot: count, change: changeSchema }),
  /** Gossip: the change agreed in this epoch; applying it gives the view of epoch + 1. */
  z.strictObject({ type: z.literal('decide'), change: changeSchema }),
  /** Gossip (direct when answering a peer still announcing): a rank's arrival at a barrier of the envelope's epoch. */
  z.strictObject({
    type: z.literal('arrive'),
    name: id(64),
    seq: z.int().min(1).max(U31),
    payload: z.string().max(BARRIER_PAYLOAD_BYTES_MAX),
    /** Sent by a node that already completed the round, answering a peer still announcing it: never answered. */
    answer: z.literal(true).optional(),
  }),
  /** Gossip, re-sent by its issuer until applied: a lifecycle command issued at any node. */
  z.strictObject({ type: z.literal('cmd'), kind: commandKindSchema, id: id(64) }),
  /** Direct: ask the receiver for its committed view (catch-up). */
  z.strictObject({ type: z.literal('viewReq') }),
  /** Direct: a committed view. */
  z.strictObject({ type: z.literal('viewResp'), view: viewSchema }),
]);

const envelopeSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  meshId: id(128),
  generation: count,
  epoch: count,
  body: bodySchema,
});

export type Message = z.infer<typeof envelopeSchema>;
export type Body = Message['body'];
export type Role = z.infer<typeof roleSchema>;
export type HeartbeatLifecycle = z.infer<typeof lifecycleSchema>;

export type DecodeResult = { ok: true; msg: Message } | { ok: false; reason: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export function encode(msg: Message): Uint8Array {
  return encoder.encode(JSON.stringify(msg));
}

/** Validates and decodes one message; never throws. */
export function decode(bytes: Uint8Array): DecodeResult {
  if (bytes.byteLength > MESSAGE_BYTES_MAX) {
    return { ok: false, reason: `message is ${bytes.byteLength} bytes, limit ${MESSAGE_BYTES_MAX}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(bytes));
  } catch (err) {
    return { ok: false, reason: `not UTF-8 JSON: ${(err as Error).message}` };
  }
  if (typeof json === 'object' && json !== null && 'v' in json && json.v !== WIRE_VERSION) {
    return { ok: false, reason: `unsupported wire version ${JSON.stringify(json.v)} (this node speaks ${WIRE_VERSION})` };
  }
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'message';
    return { ok: false, reason: `${where}: ${issue?.message ?? 'invalid'}` };
  }
  return { ok: true, msg: parsed.data };
}
