/**
 * Formation of the first view of a generation, without a coordinator.
 *
 * Each forming node computes the first view from the forming nodes it hears (ranks by
 * remembered rank, then PeerId order; the first worldSize candidates get ranks). Once its
 * proposal has been stable for formSettleTicks, it takes part in the current round: if it
 * is one of the proposal's rank holders it accepts the proposal, otherwise it passes.
 * A first view V commits in round r when every rank holder of V has accepted V in round r.
 * Messages carry a 128-bit digest of the value, not the value (see formDigest).
 *
 * Rules (each node, durably, before telling anyone):
 *  - in one round a node accepts at most one value or passes; rounds never go back;
 *  - a node that accepted V in round r moves to round r + 1 only once V is dead in r:
 *    some rank holder of V took part in r with anything else, or is in a later round;
 *  - a node that passed (or did nothing) in its round may jump to any later round.
 *
 * Why two first views cannot both commit: if V1 committed in r1 and V2 in r2 and a node x
 * held a rank in both, x accepted V1 in r1 and V2 in r2. r1 = r2 is impossible (one value
 * per round). If r1 < r2, x left r1 after accepting V1, so V1 was dead in r1 — some rank
 * holder of V1 never accepts V1 in r1 — contradicting that V1 committed. So two committed
 * first views of one generation share no rank holder, which needs at least 2·worldSize
 * nodes split into groups that cannot hear each other during formation.
 * Assumption (documented in docs/PROTOCOL.md): fewer than 2·worldSize nodes take part in
 * forming one generation. Liveness: formation waits for every chosen rank holder, so a
 * node that dies before accepting must come back (with its stored state) for it to finish.
 */
import type { ResolvedConfig } from './config.ts';
import type { Incarnation } from './view.ts';

export interface FormState {
  readonly generation: number;
  /** Invariant: never decreases within a generation. */
  readonly round: number;
  /** What this node did in `round`: accepted a value, passed, or nothing yet. */
  readonly vote: { readonly value: readonly Incarnation[] | null } | null;
}

export interface FormCandidate {
  readonly peerId: string;
  readonly bootId: string;
  readonly rememberedRank: number;
}

/** What a peer last said in formation: the digest of the value it accepted, or null for a pass. */
export interface FormReport {
  readonly bootId: string;
  readonly round: number;
  readonly digest: string | null;
}

export type FormStep =
  | { kind: 'none' }
  | { kind: 'vote'; state: FormState }
  | { kind: 'commit'; ranks: readonly Incarnation[] };

/**
 * The first view this node would propose: worldSize candidates ordered by remembered rank,
 * then PeerId; a candidate keeps its remembered rank when it is free, the others fill the
 * free ranks in PeerId order. Null when fewer than worldSize candidates are present.
 */
export function formationProposal(candidates: readonly FormCandidate[], worldSize: number): Incarnation[] | null {
  if (candidates.length < worldSize) return null;
  const remembered = (c: FormCandidate) => (c.rememberedRank >= 0 && c.rememberedRank < worldSize ? c.rememberedRank : worldSize);
  const ordered = [...candidates].sort((a, b) => remembered(a) - remembered(b) || (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
  const chosen = ordered.slice(0, worldSize);
  const ranks: (Incarnation | null)[] = new Array(worldSize).fill(null);
  const rest: FormCandidate[] = [];
  for (const c of chosen) {
    const r = remembered(c);
    if (r < worldSize && ranks[r] === null) ranks[r] = { peerId: c.peerId, bootId: c.bootId };
    else rest.push(c);
  }
  rest.sort((a, b) => (a.peerId < b.peerId ? -1 : 1));
  for (const c of rest) ranks[ranks.indexOf(null)] = { peerId: c.peerId, bootId: c.bootId };
  return ranks as Incarnation[];
}

/**
 * The digest formation messages carry instead of the value (a full value of 128 ranks would
 * not fit a small gossip message). Each node only ever accepts the value it computed itself,
 * so comparing digests is comparing values; 128 bits make an accidental collision negligible.
 */
export function formDigest(value: readonly Incarnation[]): string {
  return digest128(value.map((i) => `${i.peerId}/${i.bootId}`).join(','));
}

/** cyrb128: four 32-bit lanes of multiply-xorshift mixing (not cryptographic; peers are authenticated). */
export function digest128(text: string): string {
  let h1 = 1779033703;
  let h2 = 3144134277;
  let h3 = 1013904242;
  let h4 = 2773480762;
  for (let i = 0; i < text.length; i++) {
    const k = text.charCodeAt(i);
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067);
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233);
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213);
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179);
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067);
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233);
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213);
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179);
  h1 ^= h2 ^ h3 ^ h4;
  h2 ^= h1;
  h3 ^= h1;
  h4 ^= h1;
  return [h1, h2, h3, h4].map((h) => (h >>> 0).toString(16).padStart(8, '0')).join('');
}

/** Formation logic of one node; the caller owns persistence and sending. */
export class Formation {
  /** Latest formation message heard from each peer of this generation. */
  readonly reports = new Map<string, FormReport>();
  private proposalKey = '';
  private proposalSinceTick = 0;

  constructor(
    private readonly config: ResolvedConfig,
    public state: FormState,
  ) {}

  heard(peerId: string, report: FormReport): void {
    const prev = this.reports.get(peerId);
    // Rounds never go back for one incarnation; a late message of an older round says nothing new.
    if (prev && prev.bootId === report.bootId && prev.round > report.round) return;
    this.reports.set(peerId, report);
  }

  /** One formation step given the present candidates (including this node). */
  step(self: FormCandidate, candidates: readonly FormCandidate[], now: number): FormStep {
    const commit = this.findCommit(self);
    if (commit) return { kind: 'commit', ranks: commit };
    const result = this.advanceRound(self, candidates, now);
    // A vote can complete a value at once (a one-node mesh forms on its first tick).
    const after = result.kind === 'vote' ? this.findCommit(self) : null;
    return after ? { kind: 'commit', ranks: after } : result;
  }

  /** This node's accepted value, once every one of its rank holders accepted it in this round. */
  private findCommit(self: FormCandidate): readonly Incarnation[] | null {
    const value = this.state.vote?.value;
    if (!value) return null;
    const digest = formDigest(value);
    const round = this.state.round;
    const all = value.every((h) => {
      if (h.peerId === self.peerId) return true;
      const r = this.reports.get(h.peerId);
      return !!r && r.round === round && r.digest === digest;
    });
    return all ? value : null;
  }

  private advanceRound(self: FormCandidate, candidates: readonly FormCandidate[], now: number): FormStep {
    const maxRound = Math.max(this.state.round, ...[...this.reports.values()].map((r) => r.round));
    const vote = this.state.vote;
    if (vote && vote.value) {
      // Accepted: move on only when the value is provably dead in this round.
      const digest = formDigest(vote.value);
      const dead = vote.value.some((h) => {
        if (h.peerId === self.peerId) return false;
        const r = this.reports.get(h.peerId);
        return !!r && (r.round > this.state.round || (r.round === this.state.round && r.digest !== digest));
      });
      if (!dead) return { kind: 'none' };
      this.state = { generation: this.state.generation, round: this.state.round + 1, vote: null };
      this.proposalKey = '';
      return { kind: 'vote', state: this.state };
    }
    if (maxRound > this.state.round) {
      this.state = { generation: this.state.generation, round: maxRound, vote: null };
      this.proposalKey = '';
      return { kind: 'vote', state: this.state };
    }
    if (vote) return { kind: 'none' };

    const proposal = formationProposal(candidates, this.config.worldSize);
    if (proposal === null) {
      this.proposalKey = '';
      return { kind: 'none' };
    }
    const key = formDigest(proposal);
    if (key !== this.proposalKey) {
      this.proposalKey = key;
      this.proposalSinceTick = now;
    }
    if (now - this.proposalSinceTick < this.config.formSettleTicks && this.config.worldSize > 1) return { kind: 'none' };
    const mine = proposal.some((h) => h.peerId === self.peerId && h.bootId === self.bootId);
    this.state = { generation: this.state.generation, round: this.state.round, vote: { value: mine ? proposal : null } };
    return { kind: 'vote', state: this.state };
  }
}
