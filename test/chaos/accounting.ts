// The checks run after every chaos scenario, on what the nodes themselves recorded: every
// node's view history (its SQLite table, all incarnations) and its 'view committed' log lines.
// A violation names the invariant and the evidence; an empty list means the run was clean.
import type { LoadSummary } from './load.ts';
import type { NsCluster, NsNode } from './ns-cluster.ts';

export interface Violation {
  readonly invariant: 'agreement' | 'minority-advanced' | 'healthy-evicted' | 'flapping' | 'request-lost' | 'wrong-result' | 'bad-exit' | 'liveness';
  readonly detail: string;
}

/** A (generation, epoch) pair as one comparable number. */
export function epochOrder(generation: number, epoch: number): number {
  return generation * 1_000_000 + epoch;
}

/**
 * Agreement: no two nodes recorded different views for one (generation, epoch), comparing the
 * full stored views (SQLite) and the masks every incarnation logged when it committed.
 */
export function agreementViolations(cluster: NsCluster): Violation[] {
  const out: Violation[] = [];
  const stored = new Map<string, { node: string; json: string }>();
  const masks = new Map<string, { node: string; mask: string }>();
  for (const node of cluster.nodes) {
    for (const row of cluster.history(node)) {
      const key = `${row.generation}/${row.epoch}`;
      const seen = stored.get(key);
      if (seen === undefined) stored.set(key, { node: node.name, json: row.viewJson });
      else if (seen.json !== row.viewJson) out.push({ invariant: 'agreement', detail: `view ${key}: ${seen.node} stored ${seen.json}, ${node.name} stored ${row.viewJson}` });
    }
    for (const commit of cluster.commits(node)) {
      const key = `${String(commit.generation)}/${String(commit.epoch)}`;
      const mask = String(commit.mask);
      const seen = masks.get(key);
      if (seen === undefined) masks.set(key, { node: node.name, mask });
      else if (seen.mask !== mask) out.push({ invariant: 'agreement', detail: `view ${key}: ${seen.node} logged mask ${seen.mask}, ${node.name} logged ${mask}` });
    }
  }
  return out;
}

/** The highest (generation, epoch) any node logged as committed at or before `atMs`. */
export function highestCommitted(cluster: NsCluster, atMs: number): number {
  let highest = 0;
  for (const node of cluster.nodes) {
    for (const commit of cluster.commits(node)) {
      if (commit.time <= atMs) highest = Math.max(highest, epochOrder(Number(commit.generation), Number(commit.epoch)));
    }
  }
  return highest;
}

/**
 * Quorum: between `fromMs` (the cut fully in place) and `toMs` (the heal), no node of the
 * minority committed a view newer than the newest one committed anywhere before the cut.
 */
export function minorityViolations(cluster: NsCluster, minority: readonly NsNode[], fromMs: number, toMs: number): Violation[] {
  const ceiling = highestCommitted(cluster, fromMs);
  const out: Violation[] = [];
  for (const node of minority) {
    for (const commit of cluster.commits(node)) {
      const order = epochOrder(Number(commit.generation), Number(commit.epoch));
      if (commit.time > fromMs && commit.time < toMs && order > ceiling) {
        out.push({ invariant: 'minority-advanced', detail: `${node.name} committed ${String(commit.generation)}/${String(commit.epoch)} mask ${String(commit.mask)} while cut off` });
      }
    }
  }
  return out;
}

/**
 * Views a node committed between `fromMs` and `toMs` (by its own logs), each with the set of
 * peers active in it, read from the node's stored history.
 */
export function viewsBetween(cluster: NsCluster, node: NsNode, fromMs: number, toMs: number): { key: string; active: Set<string> }[] {
  const rows = new Map(cluster.history(node).map((r) => [`${r.generation}/${r.epoch}`, r]));
  const out: { key: string; active: Set<string> }[] = [];
  for (const commit of cluster.commits(node)) {
    if (commit.time < fromMs || commit.time > toMs) continue;
    const key = `${String(commit.generation)}/${String(commit.epoch)}`;
    const row = rows.get(key);
    if (row === undefined) continue;
    out.push({ key, active: activePeers(JSON.parse(row.viewJson)) });
  }
  return out;
}

/** PeerIds holding an active rank in a stored view. */
export function activePeers(view: unknown): Set<string> {
  const ranks = (view as { ranks?: unknown }).ranks;
  const out = new Set<string>();
  if (!Array.isArray(ranks)) return out;
  for (const slot of ranks) {
    const holder = slot as { peerId?: unknown; active?: unknown } | null;
    if (holder !== null && typeof holder.peerId === 'string' && holder.active !== false) out.add(holder.peerId);
  }
  return out;
}

/** Requests: none lost, none answered wrongly. */
export function requestViolations(summary: LoadSummary, scenario: string): Violation[] {
  const out: Violation[] = [];
  if (summary.lost > 0) out.push({ invariant: 'request-lost', detail: `${scenario}: ${summary.lost} request(s) got no answer` });
  if (summary.wrong > 0) out.push({ invariant: 'wrong-result', detail: `${scenario}: ${summary.wrong} request(s) answered with a wrong id or output` });
  return out;
}

/** Exits: every incarnation ended with code 0, except those the harness killed on purpose. */
export function exitViolations(cluster: NsCluster): Violation[] {
  const out: Violation[] = [];
  for (const node of cluster.nodes) {
    for (const exit of node.exits) {
      if (exit.killed) continue;
      if (exit.code !== 0) out.push({ invariant: 'bad-exit', detail: `${node.name} incarnation ${exit.incarnation} exited with code ${exit.code} signal ${exit.signal}` });
    }
  }
  return out;
}
