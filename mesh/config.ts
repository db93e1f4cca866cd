/**
 * Configuration of one protocol core. All timing is in ticks: the runtime calls tick()
 * every tickMs, the simulator whenever a node's virtual clock advances.
 */

export interface CoreConfig {
  meshId: string;
  /** This node's PeerId string. */
  self: string;
  /** Drawn anew at every process start; (self, bootId) is this incarnation. */
  bootId: string;
  /** Ranks in the mesh. Every node of a mesh must be configured with the same value. */
  worldSize: number;
  /**
   * 'rank' (default): the node takes part in formation and may hold a rank or be a spare.
   * 'gateway': it follows views and the lifecycle but never takes part in formation, never
   * holds a rank, is never listed as a spare and never counts toward worldSize or quorum.
   */
  role?: NodeRole;
  /** Seed of this core's PRNG (back-off jitter, heartbeat phase). */
  seed: number;
  /** Ticks between two heartbeats. */
  heartbeatTicks?: number;
  /**
   * Ticks between two heartbeats once the mesh is closed (default and at most heartbeatTicks):
   * a closed node lingers until its peers acknowledge the close with a heartbeat of the closed
   * epoch, then two of these intervals more, so a large mesh with a slow heartbeat still
   * exits soon after a STOP.
   */
  closedHeartbeatTicks?: number;
  /** Silence after which a peer is suspected and probed directly. */
  suspectTicks?: number;
  /** Ticks to wait for a probe's result before treating it as failed. */
  probeTimeoutTicks?: number;
  /**
   * Ticks between two scheduled probes of one watched member (one probe per member is in
   * flight at a time, so a member that never answers is probed every probeTimeoutTicks).
   */
  probeIntervalTicks?: number;
  /**
   * Observers per member (K): each active member probes the next K active members in rank
   * order (and a share of the spares) on schedule, whatever the mesh's size.
   */
  probeObservers?: number;
  /** Recent scheduled-probe outcomes an observer keeps per watched member. */
  probeWindow?: number;
  /** Failed probes among the last probeWindow that make an observer report the member. */
  probeFailuresToReport?: number;
  /** A proposed change must stay the same this long before this node votes for it. */
  settleTicks?: number;
  /** A peer outside the view must be heard continuously this long before it is admitted. */
  admitStableTicks?: number;
  /**
   * A peer reported for silence must be heard continuously this long before the report is
   * withdrawn (a report made on failed scheduled probes is withdrawn only by probes).
   */
  refuteTicks?: number;
  /** An undecided change this old makes this node run a classic round. */
  fallbackTicks?: number;
  /** Random extra wait (0..this) before a classic round, so proposers rarely collide. */
  fallbackJitterTicks?: number;
  /** Ticks between re-sends of votes, prepares and accepts (gossip is best-effort). */
  retransmitTicks?: number;
  /** Minimum ticks between two catch-up requests or pushes to one peer. */
  catchupTicks?: number;
  /** Upper bound on the distinct observer reports needed to remove a member (≥ 2). */
  reportThresholdMax?: number;
  /** The formation proposal must stay the same this long before this node accepts it. */
  formSettleTicks?: number;
}

/** What a node may become in the mesh (see CoreConfig.role). */
export type NodeRole = 'rank' | 'gateway';

export type ResolvedConfig = Required<CoreConfig>;

export const DEFAULT_TIMING = {
  heartbeatTicks: 2,
  suspectTicks: 4,
  probeTimeoutTicks: 2,
  probeIntervalTicks: 3,
  probeObservers: 3,
  probeWindow: 5,
  probeFailuresToReport: 3,
  settleTicks: 1,
  admitStableTicks: 4,
  refuteTicks: 12,
  fallbackTicks: 10,
  fallbackJitterTicks: 10,
  retransmitTicks: 4,
  catchupTicks: 4,
  reportThresholdMax: 3,
  formSettleTicks: 3,
} as const;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function resolveConfig(config: CoreConfig): ResolvedConfig {
  const resolved: ResolvedConfig = { ...DEFAULT_TIMING, role: 'rank', ...stripUndefined(config) } as ResolvedConfig;
  if (resolved.role !== 'rank' && resolved.role !== 'gateway') throw new ConfigError(`role must be 'rank' or 'gateway', got ${JSON.stringify(resolved.role)}`);
  const idPattern = /^[A-Za-z0-9._:+=-]+$/;
  if (!idPattern.test(resolved.meshId) || resolved.meshId.length > 128) throw new ConfigError(`bad meshId ${JSON.stringify(resolved.meshId)}`);
  if (!idPattern.test(resolved.self) || resolved.self.length > 128) throw new ConfigError(`bad self ${JSON.stringify(resolved.self)}`);
  if (!idPattern.test(resolved.bootId) || resolved.bootId.length > 64) throw new ConfigError(`bad bootId ${JSON.stringify(resolved.bootId)}`);
  if (!Number.isInteger(resolved.worldSize) || resolved.worldSize < 1 || resolved.worldSize > 1024) {
    throw new ConfigError(`worldSize must be an integer in 1..1024, got ${resolved.worldSize}`);
  }
  for (const key of Object.keys(DEFAULT_TIMING) as (keyof typeof DEFAULT_TIMING)[]) {
    const v = resolved[key];
    const min = key === 'fallbackJitterTicks' ? 0 : key === 'reportThresholdMax' || key === 'probeObservers' ? 2 : 1;
    if (!Number.isInteger(v) || v < min) throw new ConfigError(`${key} must be an integer ≥ ${min}, got ${v}`);
  }
  resolved.closedHeartbeatTicks = Math.min(resolved.heartbeatTicks, config.closedHeartbeatTicks ?? resolved.heartbeatTicks);
  if (!Number.isInteger(resolved.closedHeartbeatTicks) || resolved.closedHeartbeatTicks < 1) {
    throw new ConfigError(`closedHeartbeatTicks must be an integer ≥ 1, got ${config.closedHeartbeatTicks}`);
  }
  if (resolved.suspectTicks < 2 * resolved.heartbeatTicks) {
    throw new ConfigError(`suspectTicks (${resolved.suspectTicks}) must be at least twice heartbeatTicks (${resolved.heartbeatTicks}), or one lost heartbeat raises suspicion`);
  }
  if (resolved.probeFailuresToReport > resolved.probeWindow) {
    throw new ConfigError(`probeFailuresToReport (${resolved.probeFailuresToReport}) must be at most probeWindow (${resolved.probeWindow}), or no member is ever reported on probes`);
  }
  if (2 * resolved.probeFailuresToReport <= resolved.probeWindow) {
    throw new ConfigError(`probeFailuresToReport (${resolved.probeFailuresToReport}) must be more than half of probeWindow (${resolved.probeWindow}): a report needs a majority of failed probes`);
  }
  return resolved;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
