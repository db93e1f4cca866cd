/**
 * The mesh lifecycle: the state machine every rank runs identically (Megatron's diagram),
 * the deterministic resolution of one control round, and the encoding of control-round
 * payloads. Pure values and functions; RawNode holds the node's copy of the agreed state.
 *
 *   RUNNING --PAUSE--> PAUSING --every rank drained, one round--> PAUSED
 *   PAUSING, PAUSED --UNPAUSE--> RUNNING          (PAUSE while PAUSING/PAUSED: a no-op)
 *   PAUSED --SUSPEND--> SUSPENDING --every rank offloaded--> SUSPENDED
 *   SUSPENDED --RESUME--> RESUMING --every rank reloaded--> PAUSED
 *   PAUSED, SUSPENDED --STOP--> STOPPING --every rank torn down--> close --> STOPPED
 *
 * Agreed state is (state, version): the version counts state changes within a generation,
 * so two nodes that hold one version hold one state. A control round changes the state at
 * most once (Megatron applies at most one control signal per step), which keeps every node
 * within one round of every other in an epoch and lets a lagging rank catch up in one step.
 */

export const LIFECYCLE_STATES = ['RUNNING', 'PAUSING', 'PAUSED', 'SUSPENDING', 'SUSPENDED', 'RESUMING', 'STOPPING', 'STOPPED'] as const;
export type LifecycleState = (typeof LIFECYCLE_STATES)[number];
export const COMMAND_KINDS = ['PAUSE', 'UNPAUSE', 'SUSPEND', 'RESUME', 'STOP'] as const;
export type CommandKind = (typeof COMMAND_KINDS)[number];

/** A command as it travels: its kind and an id unique in the mesh (issuer's bootId + a counter). */
export interface Command {
  readonly kind: CommandKind;
  readonly id: string;
}

/** The outcome of one command applied to one state. */
export type CommandOutcome =
  | { readonly ok: true; readonly next: LifecycleState; readonly noop: boolean }
  | { readonly ok: false; readonly reason: string; readonly allowed: readonly CommandKind[] };

/** Commands legal in each state (PAUSE in PAUSING/PAUSED is legal and changes nothing). */
const TABLE: Record<LifecycleState, Partial<Record<CommandKind, LifecycleState>>> = {
  RUNNING: { PAUSE: 'PAUSING' },
  PAUSING: { PAUSE: 'PAUSING', UNPAUSE: 'RUNNING' },
  PAUSED: { PAUSE: 'PAUSED', UNPAUSE: 'RUNNING', SUSPEND: 'SUSPENDING', STOP: 'STOPPING' },
  SUSPENDING: {},
  SUSPENDED: { RESUME: 'RESUMING', STOP: 'STOPPING' },
  RESUMING: {},
  STOPPING: {},
  STOPPED: {},
};

/** Where each transient state goes once every rank of the mask has done its local part. */
const COMPLETION: Partial<Record<LifecycleState, LifecycleState>> = {
  PAUSING: 'PAUSED',
  SUSPENDING: 'SUSPENDED',
  RESUMING: 'PAUSED',
  STOPPING: 'STOPPED',
};

export function allowedCommands(state: LifecycleState): CommandKind[] {
  return COMMAND_KINDS.filter((k) => TABLE[state][k] !== undefined);
}

/** Applies one command to one state: the next state, or why it is illegal and what is allowed. */
export function applyCommand(state: LifecycleState, kind: CommandKind): CommandOutcome {
  const next = TABLE[state][kind];
  if (next === undefined) {
    const allowed = allowedCommands(state);
    return { ok: false, reason: `${kind} is not allowed in state ${state} (allowed: ${allowed.length > 0 ? allowed.join(', ') : 'none'})`, allowed };
  }
  return { ok: true, next, noop: next === state };
}

/** A state that waits for every rank's local part (drain, offload, reload, teardown). */
export function isTransient(state: LifecycleState): boolean {
  return COMPLETION[state] !== undefined;
}

/** The state a transient state completes into (STOPPING completes by closing the mesh). */
export function completionOf(state: LifecycleState): LifecycleState | null {
  return COMPLETION[state] ?? null;
}

/** Whether `to` may directly follow `from` in an agreed history (a command or a completion). */
export function isLegalStep(from: LifecycleState, to: LifecycleState): boolean {
  if (COMPLETION[from] === to) return true;
  return COMMAND_KINDS.some((k) => TABLE[from][k] === to && to !== from);
}

export function isLifecycleState(x: unknown): x is LifecycleState {
  return typeof x === 'string' && (LIFECYCLE_STATES as readonly string[]).includes(x);
}

export function isCommandKind(x: unknown): x is CommandKind {
  return typeof x === 'string' && (COMMAND_KINDS as readonly string[]).includes(x);
}

/**
 * One deterministic order for command ids: natural order (a trailing counter compares as a
 * number, so one issuer's commands keep their issue order), then plain string order.
 */
export function compareCommandIds(a: string, b: string): number {
  const ma = /^(.*?)(\d+)$/.exec(a);
  const mb = /^(.*?)(\d+)$/.exec(b);
  if (ma && mb && ma[1] === mb[1]) {
    const na = ma[2]!.replace(/^0+/, '');
    const nb = mb[2]!.replace(/^0+/, '');
    if (na.length !== nb.length) return na.length - nb.length;
    if (na !== nb) return na < nb ? -1 : 1;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---- control rounds ----

/** Most commands one rank puts into one control round (the rest wait for the next). */
export const CONTROL_COMMANDS_MAX = 8;
/** Most recently applied command ids one rank reports in a control round. */
export const CONTROL_APPLIED_MAX = 8;

/** What one rank contributes to a control round. */
export interface ControlPayload {
  /** The agreed lifecycle this rank holds. */
  readonly version: number;
  readonly state: LifecycleState;
  /** Whether this rank's state was learned in rounds as a member (false: from hearsay or disk). */
  readonly trusted: boolean;
  /** This rank finished its local part of the current transient state. */
  readonly done: boolean;
  /** Commands this rank has seen and not seen applied, in compareCommandIds order. */
  readonly commands: readonly Command[];
  /**
   * Ids this rank saw applied most recently: no rank applies them again, so a rank that
   * missed the round applying a command (a view change cut it off) cannot re-propose it.
   */
  readonly applied: readonly string[];
}

export function encodeControl(p: ControlPayload): string {
  return JSON.stringify({ v: p.version, s: p.state, t: p.trusted ? 1 : 0, d: p.done ? 1 : 0, c: p.commands.map((c) => [c.kind, c.id]), a: p.applied });
}

const ID_PATTERN = /^[A-Za-z0-9._:+=-]{1,64}$/;

/** Parses a control payload; null when it is malformed (treated identically by every rank). */
export function decodeControl(text: string): ControlPayload | null {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof raw !== 'object' || raw === null) return null;
  const o = raw as Record<string, unknown>;
  const v = o.v;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) return null;
  if (!isLifecycleState(o.s) || (o.t !== 0 && o.t !== 1) || (o.d !== 0 && o.d !== 1) || !Array.isArray(o.c) || o.c.length > CONTROL_COMMANDS_MAX) return null;
  const commands: Command[] = [];
  for (const entry of o.c) {
    if (!Array.isArray(entry) || entry.length !== 2 || !isCommandKind(entry[0]) || typeof entry[1] !== 'string' || !ID_PATTERN.test(entry[1])) return null;
    commands.push({ kind: entry[0], id: entry[1] });
  }
  if (!Array.isArray(o.a) || o.a.length > CONTROL_APPLIED_MAX || o.a.some((x) => typeof x !== 'string' || !ID_PATTERN.test(x))) return null;
  return { version: v, state: o.s, trusted: o.t === 1, done: o.d === 1, commands, applied: o.a as string[] };
}

/** What a completed control round does to the agreed lifecycle; identical at every rank. */
export type RoundResolution =
  /** Ranks held different versions: all adopt the newest trusted one; nothing else happens. */
  | { readonly kind: 'sync'; readonly state: LifecycleState; readonly version: number }
  | {
      readonly kind: 'apply';
      /** The state after this round (equal to the input when nothing changed). */
      readonly state: LifecycleState;
      readonly version: number;
      /** How the state changed: by a command, by completing a transient state, or not at all. */
      readonly via: 'command' | 'complete' | 'none';
      /** Commands consumed: applied (possibly as a no-op) or dropped as illegal. */
      readonly applied: readonly Command[];
      readonly dropped: readonly { readonly command: Command; readonly reason: string; readonly allowed: readonly CommandKind[] }[];
      /** Commands of the round still to be applied (after the one state change). */
      readonly carried: readonly Command[];
      /** Ids some rank reported applied before this round: consumed everywhere, never applied again. */
      readonly alreadyApplied: readonly string[];
      /** STOPPING completed: the mesh must now close. */
      readonly close: boolean;
    };

/**
 * Resolves one control round from every rank's payload, in rank order. Malformed payloads
 * count as "not done, no commands". If the ranks disagree on the version, the round only
 * synchronises them. Otherwise the union of the commands, sorted, is applied in order until
 * one of them changes the state; illegal ones before it are dropped, no-ops consumed, later
 * ones carried to the next round. If no command changed the state and the state is
 * transient and every rank reported done, the transient state completes.
 */
export function resolveRound(payloads: readonly (ControlPayload | null)[]): RoundResolution {
  const valid = payloads.filter((p): p is ControlPayload => p !== null);
  if (valid.length === 0) throw new RangeError('a control round needs at least one well-formed payload');
  const trusted = valid.filter((p) => p.trusted);
  const pool = trusted.length > 0 ? trusted : valid;
  let best = pool[0]!;
  for (const p of pool) if (p.version > best.version) best = p;
  if (valid.some((p) => p.version !== best.version || p.state !== best.state) || valid.length !== payloads.length) {
    // A malformed payload also ends the round as a sync: nothing is applied on partial input.
    return { kind: 'sync', state: best.state, version: best.version };
  }
  const alreadyApplied = new Set<string>();
  for (const p of valid) for (const id of p.applied) alreadyApplied.add(id);
  const seen = new Map<string, Command>();
  for (const p of valid) for (const c of p.commands) if (!seen.has(c.id) && !alreadyApplied.has(c.id)) seen.set(c.id, c);
  const commands = [...seen.values()].sort((a, b) => compareCommandIds(a.id, b.id));
  const applied: Command[] = [];
  const dropped: { command: Command; reason: string; allowed: readonly CommandKind[] }[] = [];
  let state = best.state;
  let i = 0;
  for (; i < commands.length; i++) {
    const c = commands[i]!;
    const out = applyCommand(state, c.kind);
    if (!out.ok) {
      dropped.push({ command: c, reason: out.reason, allowed: out.allowed });
      continue;
    }
    applied.push(c);
    if (!out.noop) {
      state = out.next;
      i++;
      break;
    }
  }
  const carried = commands.slice(i);
  if (state !== best.state) return { kind: 'apply', state, version: best.version + 1, via: 'command', applied, dropped, carried, alreadyApplied: [...alreadyApplied].sort(), close: false };
  const completion = completionOf(state);
  if (completion && valid.every((p) => p.done)) {
    if (completion === 'STOPPED') return { kind: 'apply', state, version: best.version, via: 'none', applied, dropped, carried, alreadyApplied: [...alreadyApplied].sort(), close: true };
    return { kind: 'apply', state: completion, version: best.version + 1, via: 'complete', applied, dropped, carried, alreadyApplied: [...alreadyApplied].sort(), close: false };
  }
  return { kind: 'apply', state, version: best.version, via: 'none', applied, dropped, carried, alreadyApplied: [...alreadyApplied].sort(), close: false };
}
