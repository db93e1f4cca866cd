// Fast Paxos per epoch, driven by hand: fast decisions, and the classic coordinator's choice of value from phase-1 replies.
import { describe, expect, test } from 'bun:test';
import { Agreement, type AgreementIo, FAST_RESEND_GAP_MAX, freshAcceptor } from '../../mesh/agreement.ts';
import { resolveConfig } from '../../mesh/config.ts';
import { type Change, firstView } from '../../mesh/view.ts';
import { BALLOT_RANK_SPAN, type Body } from '../../mesh/wire.ts';

const peers = ['a', 'b', 'c', 'd', 'e'];
const view = firstView('m', 1, peers.map((p) => ({ peerId: p, bootId: 'b1' })));
const config = resolveConfig({ meshId: 'm', self: 'a', bootId: 'b1', worldSize: 5, seed: 1, fallbackJitterTicks: 0 });
const change = (peer: string): Change => ({ remove: [{ peerId: peer, bootId: 'b1' }], admit: [], addSpares: [], close: false });
const X = change('e');
const Y = change('d');
const W = change('c');

function setup(cfg = config) {
  const sent: Body[] = [];
  const decided: Change[] = [];
  let persisted = 0;
  const io: AgreementIo = {
    gossip: (b) => sent.push(b),
    direct: (_to, b) => sent.push(b),
    persist: () => persisted++,
    decided: (c) => decided.push(c),
    jitter: () => 0,
    count: () => {},
  };
  const ag = new Agreement(cfg, view, 'a', freshAcceptor(view), io);
  return { ag, sent, decided, persisted: () => persisted };
}

describe('Agreement', () => {
  test('fastQuorum(5) = 4 identical fast votes decide; 3 do not', () => {
    const { ag, decided } = setup();
    ag.tick(1, X);
    ag.onVote('b', 0, X, 1);
    ag.onVote('c', 0, X, 1);
    expect(decided).toEqual([]);
    ag.onVote('d', 0, X, 1);
    expect(decided).toEqual([X]);
  });

  test('a fast vote is sent again at doubling gaps, at most FAST_RESEND_GAP_MAX retransmit intervals apart', () => {
    // No classic fallback in this test's span: only the fast vote is sent again.
    const { ag, sent } = setup(resolveConfig({ meshId: 'm', self: 'a', bootId: 'b1', worldSize: 5, seed: 1, fallbackTicks: 1000 }));
    const at: number[] = [];
    for (let now = 0; now <= 120; now++) {
      const before = sent.length;
      ag.tick(now, X);
      if (sent.slice(before).some((b) => b.type === 'vote' && b.ballot === 0)) at.push(now);
    }
    const r = config.retransmitTicks;
    const cap = FAST_RESEND_GAP_MAX * r;
    const expected = [0, r, 3 * r, 7 * r];
    while (expected.at(-1)! + cap <= 120) expected.push(expected.at(-1)! + cap);
    expect(at).toEqual(expected);
  });

  test('votes from peers that hold no rank are not counted', () => {
    const { ag, decided } = setup();
    for (const p of ['x', 'y', 'z', 'w']) ag.onVote(p, 0, X, 1);
    expect(decided).toEqual([]);
  });

  /** Runs a classic round for 'a' and returns the value of its accept. */
  function classicChoice(promises: [peer: string, votedBallot: number, voted: Change | null][], own: Change | null): Change | undefined {
    const { ag, sent } = setup();
    ag.tick(1, own);
    ag.onVote('b', 0, X, 1); // starts the instance even when this node has no change
    ag.tick(1 + config.fallbackTicks, own);
    const prepare = sent.find((b) => b.type === 'prepare');
    expect(prepare).toEqual({ type: 'prepare', ballot: BALLOT_RANK_SPAN + 0 });
    for (const [peer, votedBallot, voted] of promises) ag.onPromise(peer, BALLOT_RANK_SPAN, votedBallot, voted, 20);
    const accept = sent.find((b) => b.type === 'accept');
    return accept?.type === 'accept' ? accept.change : undefined;
  }

  test('a fast value that may have been chosen is recovered, not replaced by the coordinator’s own', () => {
    // Replies from a (own, voted Y), b and c (voted X): X has 2 ≥ fastQuorum(5) − (5 − 3) = 2.
    expect(classicChoice([['b', 0, X], ['c', 0, X]], Y)).toEqual(X);
  });

  test('when no fast value can have been chosen, the coordinator proposes its own', () => {
    expect(classicChoice([['b', 0, X], ['c', 0, W]], Y)).toEqual(Y);
  });

  test('a value voted at a classic ballot wins over fast-round votes', () => {
    expect(classicChoice([['b', BALLOT_RANK_SPAN + 3, W], ['c', 0, X], ['d', 0, X]], Y)).toEqual(W);
  });

  test('no accept before a majority has promised', () => {
    expect(classicChoice([['b', 0, X]], Y)).toBeUndefined();
  });

  test('after promising a classic ballot an acceptor never votes in the fast round', () => {
    const { ag, sent } = setup();
    ag.onPrepare('b', BALLOT_RANK_SPAN + 1, 1);
    ag.tick(2, X);
    expect(sent.filter((b) => b.type === 'vote')).toEqual([]);
    expect(ag.acceptorState().promised).toBe(BALLOT_RANK_SPAN + 1);
    expect(sent).toContainEqual({ type: 'promise', ballot: BALLOT_RANK_SPAN + 1, votedBallot: -1, voted: null });
  });

  test('a ballot whose rank is not its sender’s is refused', () => {
    const { ag, sent } = setup();
    ag.onPrepare('b', BALLOT_RANK_SPAN + 3, 1);
    expect(sent).toEqual([]);
    expect(ag.acceptorState().promised).toBe(0);
  });

  test('every promise and vote is marked for persistence', () => {
    const s = setup();
    s.ag.tick(1, X);
    expect(s.persisted()).toBe(1);
    s.ag.onPrepare('b', BALLOT_RANK_SPAN + 1, 2);
    expect(s.persisted()).toBe(2);
    s.ag.onAccept('b', BALLOT_RANK_SPAN + 1, Y, 3);
    expect(s.persisted()).toBe(3);
    expect(s.ag.acceptorState()).toMatchObject({ promised: BALLOT_RANK_SPAN + 1, votedBallot: BALLOT_RANK_SPAN + 1 });
  });
});
