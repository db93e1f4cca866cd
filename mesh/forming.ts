/**
 * Formation of the first view of a generation, without a coordinator.
 *
 * Each forming node computes the first view from the forming nodes it hears (ranks by
 * remembered rank, then PeerId order; the first worldSize candidates get ranks). Once its
 * proposal has been stable for formSettleTicks, it takes part in the current round: if it
 * is one of the proposal's rank holders it accepts the proposal, otherwise it passes.
 * A first view V commits in round r when every rank holder of V has accepted V in round r.
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
  readonly round: number;
  /** What this node did in `round`: accepted a value, passed, or nothing yet. */
  readonly vote: { readonly value: readonly Incarnation[] | null } | null;
}

export interface FormCandidate {
  readonly peerId: string;
  readonly bootId: string;
  readonly rememberedRank: number;
}

/** What a peer last said in formation. */
export interface FormReport {
  readonly bootId: string;
  readonly round: number;
  readonly value: readonly Incarnation[] | null;
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

export function formKey(value: readonly Incarnation[] | null): string {
  return value === null ? 'pass' : value.map((i) => `${i.peerId}/${i.bootId}`).join(',');
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

  /** A value every one of whose rank holders accepted it in one round, if any. */
  private findCommit(self: FormCandidate): readonly Incarnation[] | null {
    const own: FormReport = { bootId: self.bootId, round: this.state.round, value: this.state.vote?.value ?? null };
    const all = new Map(this.reports);
    if (this.state.vote) all.set(self.peerId, own);
    const checked = new Set<string>();
    for (const [, report] of all) {
      if (!report.value) continue;
      const key = `${report.round}:${formKey(report.value)}`;
      if (checked.has(key)) continue;
      checked.add(key);
      if (report.value.every((h) => { const r = all.get(h.peerId); return !!r && r.round === report.round && r.value !== null && `${r.round}:${formKey(r.value)}` === key; })) {
        return report.value;
      }
    }
    return null;
  }

  private advanceRound(self: FormCandidate, candidates: readonly FormCandidate[], now: number): FormStep {

    const maxRound = Math.max(this.state.round, ...[...this.reports.values()].map((r) => r.round));
    const vote = this.state.vote;
    if (vote && vote.value) {
      // Accepted: move on only when the value is provably dead in this round.
      const key = formKey(vote.value);
      const dead = vote.value.some((h) => {
        if (h.peerId === self.peerId) return false;
        const r = this.reports.get(h.peerId);
        return !!r && (r.round > this.state.round || (r.round === this.state.round && formKey(r.value) !== key));
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
    const key = formKey(proposal);
    if (proposal === null) {
      this.proposalKey = '';
      return { kind: 'none' };
    }
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
