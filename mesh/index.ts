/**
 * The public surface of the protocol core, for drivers (node/ runtime, mesh/sim/) and the
 * HTTP API. See docs/PROTOCOL.md for the contract.
 */
export { RawNode, compareEpoch } from './rawnode.ts';
export type { Action, Counters, MemberInfo, Outbound, PersistentState, Phase, Ready, ViewSummary } from './rawnode.ts';
export { type CoreConfig, ConfigError, DEFAULT_TIMING } from './config.ts';
export { type Change, type Incarnation, RankMask, type View, activeMask, activePeers, viewKey, viewProblem } from './view.ts';
export { type DecodeResult, type Message, MESSAGE_BYTES_MAX, WIRE_VERSION, decode, encode } from './wire.ts';
export { fastQuorum, quorumSize } from './quorum.ts';
export type { Liveness } from './membership.ts';
