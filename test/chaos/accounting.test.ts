// Covers the chaos audit itself on hand-made records: each check passes on clean records and
// fails on the fault it exists to catch (two views for one epoch, a minority that advanced, a
// lost or wrong request, an unexpected exit), so a clean chaos run means something.
import { describe, expect, test } from 'bun:test';
import { agreementViolations, exitViolations, minorityViolations, requestViolations, viewsBetween } from './accounting.ts';
import type { LoadSummary } from './load.ts';
import { canonicalJson, type HistoryRow, type LogRecord, type NodeExit, type NsCluster, type NsNode } from './ns-cluster.ts';

interface FakeNode {
  name: string;
  history: HistoryRow[];
  commits: LogRecord[];
  exits: NodeExit[];
}

/** The three things the audit reads of a cluster, from plain records. */
function records(nodes: FakeNode[]): { cluster: NsCluster; nodes: NsNode[] } {
  const asNodes = nodes.map((n) => ({ name: n.name, exits: n.exits }) as unknown as NsNode);
  const byNode = new Map(asNodes.map((n, i) => [n, nodes[i]!]));
  const cluster = {
    nodes: asNodes,
    history: (node: NsNode) => byNode.get(node)!.history,
    commits: (node: NsNode) => byNode.get(node)!.commits,
  } as unknown as NsCluster;
  return { cluster, nodes: asNodes };
}

const view = (epoch: number, peers: string[]) => ({ meshId: 'chaos', generation: 1, epoch, worldSize: 3, ranks: peers.map((p) => (p === '' ? null : { peerId: p, bootId: 'b' })), spares: [], closed: false });
const row = (epoch: number, peers: string[], atMs: number): HistoryRow => ({ generation: 1, epoch, viewJson: canonicalJson(view(epoch, peers)), committedAtMs: atMs });
const commit = (epoch: number, mask: string, atMs: number): LogRecord => ({ time: atMs, msg: 'view committed', generation: 1, epoch, mask });

describe('agreement', () => {
  test('equal views for each epoch pass; two views for one epoch are reported', () => {
    const a = { name: 'a', history: [row(1, ['a', 'b', 'c'], 10), row(2, ['a', 'b', ''], 20)], commits: [commit(1, '7', 10), commit(2, '3', 20)], exits: [] };
    const b = { name: 'b', history: [row(1, ['a', 'b', 'c'], 11), row(2, ['a', 'b', ''], 21)], commits: [commit(1, '7', 11), commit(2, '3', 21)], exits: [] };
    expect(agreementViolations(records([a, b]).cluster)).toEqual([]);
    const c = { name: 'c', history: [row(1, ['a', 'b', 'c'], 12), row(2, ['', 'b', 'c'], 22)], commits: [commit(1, '7', 12), commit(2, '6', 22)], exits: [] };
    const found = agreementViolations(records([a, b, c]).cluster);
    expect(found.map((v) => v.invariant)).toEqual(['agreement', 'agreement']);
    expect(found[0]!.detail).toContain('view 1/2');
  });

  test('key order inside a stored view does not matter', () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: [3] } })).toBe(canonicalJson({ a: { c: [3], d: 2 }, b: 1 }));
  });
});

describe('minority', () => {
  const majority = { name: 'm', history: [], commits: [commit(1, '7', 10), commit(2, '3', 150)], exits: [] };
  test('a minority that learns only views older than the cut passes', () => {
    const minority = { name: 'x', history: [], commits: [commit(1, '7', 10), commit(1, '7', 120)], exits: [] };
    const { cluster, nodes } = records([majority, minority]);
    expect(minorityViolations(cluster, [nodes[1]!], 100, 200)).toEqual([]);
  });

  test('a minority committing a newer view while cut off is reported; the same after the heal is not', () => {
    const minority = { name: 'x', history: [], commits: [commit(1, '7', 10), commit(2, '4', 160)], exits: [] };
    const { cluster, nodes } = records([majority, minority]);
    const found = minorityViolations(cluster, [nodes[1]!], 100, 200);
    expect(found).toHaveLength(1);
    expect(found[0]!.invariant).toBe('minority-advanced');
    expect(minorityViolations(cluster, [nodes[1]!], 100, 155)).toEqual([]);
  });
});

describe('views in a window', () => {
  test('lists the active peers of the views a node committed in the window', () => {
    const n = { name: 'a', history: [row(1, ['a', 'b', 'c'], 10), row(2, ['a', '', 'c'], 20)], commits: [commit(1, '7', 10), commit(2, '5', 20)], exits: [] };
    const { cluster, nodes } = records([n]);
    const views = viewsBetween(cluster, nodes[0]!, 15, 30);
    expect(views.map((v) => v.key)).toEqual(['1/2']);
    expect([...views[0]!.active].sort()).toEqual(['a', 'c']);
  });
});

describe('requests and exits', () => {
  const summary = (over: Partial<LoadSummary>): LoadSummary => ({ sent: 10, refused: 1, accepted: 9, completed: 8, failed: 1, lost: 0, wrong: 0, redispatched: 0, ...over });
  test('answered requests pass; lost and wrong ones are reported', () => {
    expect(requestViolations(summary({}), 's')).toEqual([]);
    expect(requestViolations(summary({ lost: 2, completed: 6 }), 's').map((v) => v.invariant)).toEqual(['request-lost']);
    expect(requestViolations(summary({ wrong: 1, completed: 7 }), 's').map((v) => v.invariant)).toEqual(['wrong-result']);
  });

  test('exit 0 and the harness\'s own kills pass; any other end is reported', () => {
    const clean = { name: 'a', history: [], commits: [], exits: [{ incarnation: 1, code: null, signal: 'SIGKILL', killed: true }, { incarnation: 2, code: 0, signal: null, killed: false }] };
    expect(exitViolations(records([clean]).cluster)).toEqual([]);
    const hung = { name: 'b', history: [], commits: [], exits: [{ incarnation: 1, code: null, signal: 'SIGKILL', killed: false }] };
    const crashed = { name: 'c', history: [], commits: [], exits: [{ incarnation: 1, code: 1, signal: null, killed: false }] };
    expect(exitViolations(records([hung, crashed]).cluster).map((v) => v.detail)).toEqual([
      'b incarnation 1 exited with code null signal SIGKILL',
      'c incarnation 1 exited with code 1 signal null',
    ]);
  });
});
