/**
 * Views and the active-rank mask: the agreed membership of one epoch of a mesh.
 *
 * A view is (generation, epoch, worldSize, rank → incarnation or empty, spares, closed).
 * Views are values: every function here returns a new view and never mutates its input,
 * so a committed view can be shared between the core, the simulator and the runtime.
 */

/** One process start of a peer: a restarted host is a new incarnation of a known peer. */
export interface Incarnation {
  readonly peerId: string;
  readonly bootId: string;
}

export interface View {
  readonly meshId: string;
  readonly generation: number;
  /** Committed views within the generation; the first view has epoch 1. */
  readonly epoch: number;
  readonly worldSize: number;
  /** Invariant: length === worldSize; no peerId appears twice across ranks and spares. */
  readonly ranks: readonly (Incarnation | null)[];
  /** Hot spares, sorted by peerId (canonical order). */
  readonly spares: readonly Incarnation[];
  /** A closed view is final: no change is ever applied to it. */
  readonly closed: boolean;
}

/** A set of changes proposed and agreed as one step from epoch e to e + 1. */
export interface Change {
  /** Incarnations (rank holders or spares) to remove. */
  readonly remove: readonly Incarnation[];
  /** Incarnations to place into ranks that are empty once the removals are applied. */
  readonly admit: readonly { readonly rank: number; readonly peerId: string; readonly bootId: string }[];
  /** Incarnations to add to the spares. */
  readonly addSpares: readonly Incarnation[];
  readonly close: boolean;
}

export const EMPTY_CHANGE: Change = { remove: [], admit: [], addSpares: [], close: false };

export function sameIncarnation(a: Incarnation | null | undefined, b: Incarnation | null | undefined): boolean {
  return !!a && !!b && a.peerId === b.peerId && a.bootId === b.bootId;
}

export function incarnationKey(inc: Incarnation): string {
  const held = incarnationKeys.get(inc);
  // Checked, not trusted: an object passed as an Incarnation may be a record that changes
  // (a peer's entry takes its new bootId).
  if (held !== undefined && held.peerId === inc.peerId && held.bootId === inc.bootId) return held.key;
  const key = `${inc.peerId}/${inc.bootId}`;
  incarnationKeys.set(inc, { peerId: inc.peerId, bootId: inc.bootId, key });
  return key;
}

/**
 * Keys of the incarnation objects seen. The failure detector looks up every recorded
 * incarnation by key at each tick: a held key costs one lookup instead of building and hashing
 * a new ~100-character string.
 */
const incarnationKeys = new WeakMap<Incarnation, { peerId: string; bootId: string; key: string }>();

export function isEmptyChange(change: Change): boolean {
  return change.remove.length === 0 && change.admit.length === 0 && change.addSpares.length === 0 && !change.close;
}

/** Canonical form of a change: entries sorted, so equal changes have equal keys. */
export function canonicalChange(change: Change): Change {
  return {
    remove: [...change.remove].sort(compareIncarnation).map((i) => ({ peerId: i.peerId, bootId: i.bootId })),
    admit: [...change.admit]
      .sort((a, b) => a.rank - b.rank || compareIncarnation(a, b))
      .map((a) => ({ rank: a.rank, peerId: a.peerId, bootId: a.bootId })),
    addSpares: [...change.addSpares].sort(compareIncarnation).map((i) => ({ peerId: i.peerId, bootId: i.bootId })),
    close: change.close,
  };
}

/** A string that is equal for two changes exactly when they are equal. */
export function changeKey(change: Change): string {
  const c = canonicalChange(change);
  const inc = (i: Incarnation) => `${i.peerId}/${i.bootId}`;
  return `r:${c.remove.map(inc).join(',')};a:${c.admit.map((a) => `${a.rank}=${a.peerId}/${a.bootId}`).join(',')};s:${c.addSpares.map(inc).join(',')};c:${c.close ? 1 : 0}`;
}

/** The first view of a generation, from the agreed rank holders. */
export function firstView(meshId: string, generation: number, ranks: readonly Incarnation[]): View {
  return {
    meshId,
    generation,
    epoch: 1,
    worldSize: ranks.length,
    ranks: ranks.map((r) => ({ peerId: r.peerId, bootId: r.bootId })),
    spares: [],
    closed: false,
  };
}

/**
 * The view of epoch e + 1 that results from agreeing `change` in epoch e. Total and
 * deterministic: entries that do not apply (an admission into a held rank, a peer already
 * present) are skipped the same way on every node, so every node that applies one agreed
 * change to one view gets the same next view.
 */
export function applyChange(view: View, change: Change): View {
  if (view.closed) return view;
  const c = canonicalChange(change);
  const ranks: (Incarnation | null)[] = view.ranks.map((r) => r);
  let spares: Incarnation[] = view.spares.filter((s) => !c.remove.some((x) => sameIncarnation(x, s)));
  for (let r = 0; r < ranks.length; r++) {
    if (c.remove.some((x) => sameIncarnation(x, ranks[r]))) ranks[r] = null;
  }
  for (const a of c.admit) {
    if (a.rank < 0 || a.rank >= ranks.length || ranks[a.rank] !== null) continue;
    if (ranks.some((h) => h?.peerId === a.peerId)) continue;
    ranks[a.rank] = { peerId: a.peerId, bootId: a.bootId };
    spares = spares.filter((s) => s.peerId !== a.peerId);
  }
  for (const s of c.addSpares) {
    if (ranks.some((h) => h?.peerId === s.peerId) || spares.some((x) => x.peerId === s.peerId)) continue;
    spares.push({ peerId: s.peerId, bootId: s.bootId });
  }
  spares.sort(compareIncarnation);
  return { ...view, epoch: view.epoch + 1, ranks, spares, closed: view.closed || c.close };
}

/** The active-rank mask of a view: the ranks held by an incarnation. */
export function activeMask(view: View): RankMask {
  const mask = RankMask.empty(view.worldSize);
  view.ranks.forEach((holder, rank) => {
    if (holder) mask.set(rank);
  });
  return mask;
}

/** Lookups by peer of one view, built once per view (views are values, never mutated). */
interface ViewIndex {
  readonly active: readonly string[];
  readonly rankOf: ReadonlyMap<string, number>;
  readonly recorded: ReadonlyMap<string, Incarnation>;
}

const viewIndexes = new WeakMap<View, ViewIndex>();

/**
 * The core asks these of the current view on every tick and message: a scan of every rank per
 * call made the failure detector's pass over the peers O(n²) per tick.
 */
function indexOf(view: View): ViewIndex {
  let index = viewIndexes.get(view);
  if (index) return index;
  const active: string[] = [];
  const rankOf = new Map<string, number>();
  const recorded = new Map<string, Incarnation>();
  view.ranks.forEach((holder, rank) => {
    if (!holder) return;
    active.push(holder.peerId);
    if (!rankOf.has(holder.peerId)) rankOf.set(holder.peerId, rank);
    if (!recorded.has(holder.peerId)) recorded.set(holder.peerId, holder);
  });
  for (const s of view.spares) if (!recorded.has(s.peerId)) recorded.set(s.peerId, s);
  index = { active, rankOf, recorded };
  viewIndexes.set(view, index);
  return index;
}

/** The peerIds of the active members (the acceptors of the next view change), rank order. */
export function activePeers(view: View): readonly string[] {
  return indexOf(view).active;
}

/** The rank held by `peerId` in `view` (whatever its incarnation), or -1. */
export function rankOfPeer(view: View, peerId: string): number {
  return indexOf(view).rankOf.get(peerId) ?? -1;
}

/** The incarnation `view` records for `peerId`, as a rank holder or a spare. */
export function recordedIncarnation(view: View, peerId: string): Incarnation | null {
  return indexOf(view).recorded.get(peerId) ?? null;
}

/** A string equal for two views exactly when they are equal. */
export function viewKey(view: View): string {
  const ranks = view.ranks.map((h) => (h ? `${h.peerId}/${h.bootId}` : '-')).join(',');
  const spares = view.spares.map((s) => `${s.peerId}/${s.bootId}`).join(',');
  return `${view.meshId}|${view.generation}|${view.epoch}|${view.worldSize}|${ranks}|${spares}|${view.closed ? 1 : 0}`;
}

/** A short digest of a view for heartbeats (FNV-1a, 32 bits). */
export function viewDigest(view: View): number {
  const key = viewKey(view);
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Why a view breaks its invariants, or null when it keeps them. */
export function viewProblem(view: View): string | null {
  if (view.ranks.length !== view.worldSize) return `ranks has ${view.ranks.length} entries, worldSize is ${view.worldSize}`;
  const seen = new Set<string>();
  for (const h of view.ranks) {
    if (!h) continue;
    if (seen.has(h.peerId)) return `peer ${h.peerId} holds two ranks`;
    seen.add(h.peerId);
  }
  for (const s of view.spares) {
    if (seen.has(s.peerId)) return `peer ${s.peerId} is both a member and a spare, or a spare twice`;
    seen.add(s.peerId);
  }
  for (let i = 1; i < view.spares.length; i++) {
    const a = view.spares[i - 1];
    const b = view.spares[i];
    if (a && b && compareIncarnation(a, b) >= 0) return 'spares are not in peerId order';
  }
  return null;
}

export function compareIncarnation(a: Incarnation, b: Incarnation): number {
  if (a.peerId !== b.peerId) return a.peerId < b.peerId ? -1 : 1;
  if (a.bootId !== b.bootId) return a.bootId < b.bootId ? -1 : 1;
  return 0;
}

/**
 * A set of ranks as a bitset. Bit r stands for rank r; iteration is always in rank order.
 * The canonical encoding is the lowercase hex of the bitset read as an unsigned integer
 * (no leading zeros, "0" when empty): ranks {0, 1, 2} → "7", rank 4 alone → "10".
 */
export class RankMask {
  /** Invariant: bits at positions ≥ size are zero. */
  private readonly words: Uint32Array;

  private constructor(readonly size: number) {
    this.words = new Uint32Array(Math.max(1, Math.ceil(size / 32)));
  }

  static empty(size: number): RankMask {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`mask size must be an integer ≥ 0, got ${size}`);
    return new RankMask(size);
  }

  static of(size: number, ranks: Iterable<number>): RankMask {
    const mask = RankMask.empty(size);
    for (const r of ranks) mask.set(r);
    return mask;
  }

  /** Parses the canonical hex encoding; throws RangeError on bad text or a bit ≥ size. */
  static fromHex(size: number, hex: string): RankMask {
    if (!/^(0|[1-9a-f][0-9a-f]*)$/.test(hex)) throw new RangeError(`not a canonical mask: ${JSON.stringify(hex)}`);
    const mask = RankMask.empty(size);
    for (let i = 0; i < hex.length; i++) {
      const nibble = parseInt(hex[hex.length - 1 - i] as string, 16);
      for (let b = 0; b < 4; b++) if (nibble & (1 << b)) mask.set(i * 4 + b);
    }
    return mask;
  }

  set(rank: number): void {
    this.check(rank);
    this.words[rank >>> 5]! |= 1 << (rank & 31);
  }

  clear(rank: number): void {
    this.check(rank);
    this.words[rank >>> 5]! &= ~(1 << (rank & 31));
  }

  has(rank: number): boolean {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.size) return false;
    return (this.words[rank >>> 5]! & (1 << (rank & 31))) !== 0;
  }

  count(): number {
    let n = 0;
    for (const word of this.words) {
      let bits = word;
      while (bits !== 0) {
        bits &= bits - 1;
        n++;
      }
    }
    return n;
  }

  /** Ranks in ascending order. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let w = 0; w < this.words.length; w++) {
      let bits = this.words[w]!;
      while (bits !== 0) {
        const low = bits & -bits;
        yield w * 32 + (31 - Math.clz32(low));
        bits ^= low;
      }
    }
  }

  toArray(): number[] {
    return [...this];
  }

  toHex(): string {
    let hex = '';
    for (let w = this.words.length - 1; w >= 0; w--) hex += this.words[w]!.toString(16).padStart(8, '0');
    hex = hex.replace(/^0+/, '');
    return hex === '' ? '0' : hex;
  }

  equals(other: RankMask): boolean {
    return this.size === other.size && this.toHex() === other.toHex();
  }

  private check(rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.size) {
      throw new RangeError(`rank ${rank} outside mask of size ${this.size}`);
    }
  }
}
