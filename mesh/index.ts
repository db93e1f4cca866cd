/**
 * The public surface of the protocol core, for drivers (node/ runtime, mesh/sim/) and the
 * HTTP API. See docs/PROTOCOL.md for the contract.
 */
export { BarrierError, COMMAND_TTL_TICKS, CONTROL_BARRIER, LifecycleError, PENDING_COMMANDS_MAX, RawNode, compareEpoch } from './rawnode.ts';
export type {
  Action,
  Counters,
  LifecycleInfo,
  LifecycleTransition,
  LifecycleVia,
  MemberInfo,
  Outbound,
  PersistedLifecycle,
  PersistentState,
  Phase,
  Ready,
  ViewSummary,
} from './rawnode.ts';
export { BARRIER_PAYLOAD_BYTES_MAX, type BarrierInfo, type BarrierResult } from './barrier.ts';
export {
  COMMAND_KINDS,
  type CommandKind,
  type CommandOutcome,
  LIFECYCLE_STATES,
  type LifecycleState,
  allowedCommands,
  applyCommand,
  isCommandKind,
  isTransient,
} from './lifecycle.ts';
export { type CoreConfig, ConfigError, DEFAULT_TIMING } from './config.ts';
export { type Change, type Incarnation, RankMask, type View, activeMask, activePeers, viewKey, viewProblem } from './view.ts';
export { type DecodeResult, type Message, MESSAGE_BYTES_MAX, WIRE_VERSION, decode, encode } from './wire.ts';
export { fastQuorum, quorumSize } from './quorum.ts';
export type { Liveness } from './membership.ts';
