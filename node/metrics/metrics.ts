// Prometheus metrics of one node. Each node owns its own registry (never prom-client's global
// default), so several nodes in one process — tests, the in-process mesh — keep separate
// figures. Counts the node already keeps (the driver's and the core's counters, the rank's
// request counts) are read at scrape time; latencies are observed as they happen: HTTP
// requests by the middleware in http.ts, engine iterations and collectives through the rank
// host's hooks, lifecycle transitions from the driver's events, barrier rounds by looking at
// the core's open barriers after every core gossip message this node receives (arrivals come
// that way) and once per tick.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { IterationStats } from '../engine/loop.ts';
import type { LifecycleAction, MeshDriver } from '../mesh/driver.ts';
import type { RankStatus } from '../rank/host.ts';
import type { BarrierResult } from '../../mesh/rawnode.ts';

/** What the metrics read from the running node; every part but the driver may be absent. */
export interface MetricsSources {
  readonly driver: Pick<MeshDriver, 'on' | 'off' | 'counters' | 'core'>;
  readonly rank?: { rankStatus(): RankStatus };
  /** The edge ingress: its request counts by outcome, and its held, queued and in-flight requests. */
  readonly ingress?: {
    /** Named counts (e.g. IngressCounters); every numeric field becomes one series. */
    readonly counters: object;
    load(): { held: number; queued: number; inflight: number };
  };
}

export type CollectiveOp = 'allReduce' | 'broadcast' | 'allGather' | 'barrier';

/** Latency buckets (seconds) from 1 ms to 30 s: HTTP requests, barriers, transitions. */
const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Engine iterations and collectives are shorter: 50 µs to 5 s. */
const stepBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
/** Open barriers remembered for the latency of their completion, at most. */
const openBarriersMax = 256;

export class NodeMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  readonly httpInFlight: Gauge;
  /** HTTP requests answered so far (the dashboard's request rate). */
  httpAnswered = 0;
  private readonly viewChanges: Counter;
  private readonly transitions: Counter<'from' | 'to'>;
  private readonly transitionSeconds: Histogram<'from' | 'to'>;
  private readonly barrierSeconds: Histogram<'name'>;
  private readonly iterationSeconds: Histogram<'kind'>;
  private readonly batchTokens: Counter;
  private readonly collectiveBytes: Counter<'op'>;
  private readonly collectiveSeconds: Histogram<'op'>;
  private sources: MetricsSources | undefined;
  /** When this node first saw each open barrier (key generation/epoch/name/seq), wall-clock ms. */
  private readonly openBarriers = new Map<string, number>();
  private lastTransitionMs: number | null = null;
  private readonly onView = (): void => this.viewChanges.inc();
  private readonly onLifecycle = (change: LifecycleAction, atMs: number): void => this.observeTransition(change, atMs);
  private readonly onBarrier = (result: BarrierResult): void => this.observeBarrier(result);
  /**
   * The barrier sampler runs each time the driver has stepped the core (a tick, a peer's
   * message, a local arrival), so a round that opens and completes within a tick is timed.
   */
  private readonly onStepped = (): void => this.sampleBarriers();
  /** The core's barrierKey() at the last sample: no round opened since when it is unchanged. */
  private sampledKey: string | null = null;

  constructor() {
    const registers = [this.registry];
    const read = (): MetricsSources | undefined => this.sources;
    this.httpRequests = new Counter({ name: 'rankmesh_http_requests_total', help: 'HTTP requests answered, by method, route and status', labelNames: ['method', 'route', 'status'], registers });
    this.httpDuration = new Histogram({ name: 'rankmesh_http_request_duration_seconds', help: 'HTTP request latency, by method and route', labelNames: ['method', 'route'], buckets: latencyBuckets, registers });
    this.httpInFlight = new Gauge({ name: 'rankmesh_http_requests_in_flight', help: 'HTTP requests being answered now', registers });
    this.viewChanges = new Counter({ name: 'rankmesh_view_changes_total', help: 'Views this node committed or learned', registers });
    this.transitions = new Counter({ name: 'rankmesh_lifecycle_transitions_total', help: 'Lifecycle state changes this node saw, by from and to state', labelNames: ['from', 'to'], registers });
    this.transitionSeconds = new Histogram({
      name: 'rankmesh_lifecycle_transition_seconds',
      help: 'Time spent in a transient lifecycle state (PAUSING, SUSPENDING, RESUMING, STOPPING) before the next state',
      labelNames: ['from', 'to'],
      buckets: latencyBuckets,
      registers,
    });
    this.barrierSeconds = new Histogram({
      name: 'rankmesh_barrier_seconds',
      help: 'Barrier rounds: from when this node first saw the round open (after a received core message, or at a tick) to its completion; 0 when it opened and completed at once',
      labelNames: ['name'],
      buckets: latencyBuckets,
      registers,
    });
    this.iterationSeconds = new Histogram({ name: 'rankmesh_engine_iteration_seconds', help: 'Engine loop iteration time, by kind (step, dummy, idle)', labelNames: ['kind'], buckets: stepBuckets, registers });
    this.batchTokens = new Counter({ name: 'rankmesh_engine_tokens_total', help: 'Tokens this rank stepped', registers });
    this.collectiveBytes = new Counter({ name: 'rankmesh_collective_bytes_total', help: 'Bytes this rank contributed to collectives, by operation; rate() over rankmesh_collective_seconds_sum is the bandwidth', labelNames: ['op'], registers });
    this.collectiveSeconds = new Histogram({ name: 'rankmesh_collective_seconds', help: 'Collective latency, by operation', labelNames: ['op'], buckets: stepBuckets, registers });

    // Totals the node keeps itself are copied in at scrape time: a counter only ever grows by
    // the difference from what it last saw, so a reset of the source cannot make it go down.
    syncedCounter(registers, 'rankmesh_gossip_messages_total', 'Core protocol gossip messages, by direction and message type (malformed ones are in rankmesh_rejected_messages_total)', ['direction', 'type'], () => {
      const c = read()?.driver.counters;
      return c === undefined ? [] : [...byType('in', c.gossipIn), ...byType('out', c.gossipOut)];
    });
    syncedCounter(registers, 'rankmesh_direct_messages_total', 'Core protocol direct messages, by direction and message type', ['direction', 'type'], () => {
      const c = read()?.driver.counters;
      return c === undefined ? [] : [...byType('in', c.directIn), ...byType('out', c.directOut)];
    });
    syncedCounter(registers, 'rankmesh_rejected_messages_total', 'Core messages refused, by reason (malformed, stale, future, and the core\'s own reasons)', ['reason'], () => {
      const s = read();
      if (s === undefined) return [];
      const core = s.driver.core.counters;
      const rows: Row[] = [[{ reason: 'stale' }, core.stale], [{ reason: 'future' }, core.future]];
      for (const [reason, n] of Object.entries(s.driver.counters.rejected)) rows.push([{ reason }, n]);
      for (const [reason, n] of Object.entries(core.rejected)) rows.push([{ reason }, n]);
      return mergeRows(rows);
    });
    syncedCounter(registers, 'rankmesh_suspicions_total', 'Peers this node suspected and probed', [], () => single(read()?.driver.counters.suspicions));
    syncedCounter(registers, 'rankmesh_probe_failures_total', 'Direct probes that failed', [], () => single(read()?.driver.counters.probeFailures));
    syncedCounter(registers, 'rankmesh_send_failures_total', 'Core messages that could not be sent', [], () => single(read()?.driver.counters.sendFailures));
    syncedCounter(registers, 'rankmesh_rank_requests_total', 'Requests on this node\'s rank, by outcome', ['outcome'], () => {
      const r = read()?.rank?.rankStatus().requests;
      return r === undefined ? [] : [[{ outcome: 'accepted' }, r.accepted], [{ outcome: 'completed' }, r.completed], [{ outcome: 'failed' }, r.failed], [{ outcome: 'timed_out' }, r.timedOut]];
    });

    syncedCounter(registers, 'rankmesh_ingress_events_total', 'Edge ingress: requests accepted, done, failed, re-dispatched, refused, by event', ['event'], () => {
      const counters = read()?.ingress?.counters;
      return counters === undefined ? [] : Object.entries(counters).flatMap(([event, n]): Row[] => (typeof n === 'number' ? [[{ event: snake(event) }, n]] : []));
    });

    readGauge(registers, 'rankmesh_view_generation', 'Generation of the committed view', [], () => single(read()?.driver.core.view()?.generation));
    readGauge(registers, 'rankmesh_view_epoch', 'Epoch of the committed view', [], () => single(read()?.driver.core.view()?.epoch));
    readGauge(registers, 'rankmesh_active_ranks', 'Ranks in the active-rank mask of the committed view', [], () => {
      const view = read()?.driver.core.view();
      return single(view === null || view === undefined ? undefined : view.ranks.filter((h) => h !== null).length);
    });
    readGauge(registers, 'rankmesh_spares', 'Hot spares in the committed view', [], () => single(read()?.driver.core.view()?.spares.length));
    readGauge(registers, 'rankmesh_lifecycle_state', 'This node\'s lifecycle state (1 for the current state)', ['state'], () => {
      const s = read();
      return s === undefined ? [] : [[{ state: s.driver.core.lifecycleState() }, 1]];
    });
    readGauge(registers, 'rankmesh_queue_depth', 'Requests waiting, by queue (rank: this node\'s engine loop; ingress_*: requests this node accepted, held without a rank, queued for a rank, in flight)', ['queue'], () => {
      const s = read();
      if (s === undefined) return [];
      const rows: Row[] = [];
      const rank = s.rank?.rankStatus();
      if (rank !== undefined) rows.push([{ queue: 'rank' }, rank.queueLength]);
      const ingress = s.ingress?.load();
      if (ingress !== undefined) {
        rows.push([{ queue: 'ingress_held' }, ingress.held], [{ queue: 'ingress_queued' }, ingress.queued], [{ queue: 'ingress_inflight' }, ingress.inflight]);
      }
      return rows;
    });
    readGauge(registers, 'rankmesh_rank_serving', '1 while this node\'s rank serves its epoch', [], () => {
      const r = read()?.rank?.rankStatus();
      return single(r === undefined ? undefined : r.serving ? 1 : 0);
    });
    // The process, under the names Prometheus client libraries use (a cheap subset: no timers).
    readGauge(registers, 'process_resident_memory_bytes', 'Resident memory of the process, in bytes', [], () => single(process.memoryUsage().rss));
    readGauge(registers, 'process_heap_bytes', 'JavaScript heap in use, in bytes', [], () => single(process.memoryUsage().heapUsed));
    syncedCounter(registers, 'process_cpu_seconds_total', 'CPU time of the process (user and system), in seconds', [], () => {
      const cpu = process.cpuUsage();
      return single((cpu.user + cpu.system) / 1e6);
    });

    readGauge(registers, 'rankmesh_warmup_fraction', 'Engine warm-up progress, 0 to 1', [], () => single(read()?.rank?.rankStatus().warmUp.fraction));
  }

  /** Starts reading `sources` and listening to the driver. */
  attach(sources: MetricsSources): void {
    this.detach();
    this.sources = sources;
    sources.driver.on('view', this.onView);
    sources.driver.on('lifecycle', this.onLifecycle);
    sources.driver.on('barrier', this.onBarrier);
    sources.driver.on('stepped', this.onStepped);
  }

  /** Stops listening and sampling; the figures so far stay readable. Idempotent. */
  detach(): void {
    const s = this.sources;
    if (s === undefined) return;
    s.driver.off('view', this.onView);
    s.driver.off('lifecycle', this.onLifecycle);
    s.driver.off('barrier', this.onBarrier);
    s.driver.off('stepped', this.onStepped);
    this.openBarriers.clear();
    this.sampledKey = null;
  }

  /** The Prometheus text exposition of every metric of this node. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The engine loop's onIteration hook. */
  observeIteration(stats: IterationStats): void {
    this.iterationSeconds.observe({ kind: stats.kind }, stats.iterationMs / 1000);
    if (stats.batchTokens > 0) this.batchTokens.inc(stats.batchTokens);
  }

  /** One collective of `bytes` (this rank's contribution) that took `ms`. */
  observeCollective(op: CollectiveOp, bytes: number, ms: number): void {
    this.collectiveBytes.inc({ op }, bytes);
    this.collectiveSeconds.observe({ op }, ms / 1000);
  }

  private observeTransition(change: LifecycleAction, atMs: number): void {
    this.sampleBarriers();
    this.transitions.inc({ from: change.previous, to: change.state });
    // Time in a transient state is what an operator waits for; time spent RUNNING is not a latency.
    if (this.lastTransitionMs !== null && change.previous.endsWith('ING') && change.previous !== 'RUNNING') {
      this.transitionSeconds.observe({ from: change.previous, to: change.state }, Math.max(0, atMs - this.lastTransitionMs) / 1000);
    }
    this.lastTransitionMs = atMs;
  }

  private observeBarrier(result: BarrierResult): void {
    const key = barrierKey(result.generation, result.epoch, result.name, result.seq);
    const openedMs = this.openBarriers.get(key);
    this.openBarriers.delete(key);
    // A round that opened and completed between two samples took less than one tick; it is
    // recorded as zero rather than dropped, so the count of rounds stays right.
    this.barrierSeconds.observe({ name: result.name }, openedMs === undefined ? 0 : Math.max(0, Date.now() - openedMs) / 1000);
  }

  private sampleBarriers(): void {
    const core = this.sources?.driver.core;
    const view = core?.view();
    if (core === undefined || view === null || view === undefined) return;
    // Only a newly opened round is news; listing every round at each tick and message was 4 %
    // of an idle N=32 node's main thread.
    const opened = core.barrierKey();
    if (opened === null || opened === this.sampledKey) return;
    this.sampledKey = opened;
    const nowMs = Date.now();
    for (const b of core.barriers()) {
      if (b.complete) continue;
      const key = barrierKey(view.generation, view.epoch, b.name, b.seq);
      if (!this.openBarriers.has(key) && this.openBarriers.size < openBarriersMax) this.openBarriers.set(key, nowMs);
    }
  }
}

type Labels = Record<string, string>;
type Row = [Labels, number];

function barrierKey(generation: number, epoch: number, name: string, seq: number): string {
  return `${generation}/${epoch}/${name}/${seq}`;
}

/** `refusedBusy` → `refused_busy`, the Prometheus way of writing label values. */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function single(value: number | undefined): Row[] {
  return value === undefined ? [] : [[{}, value]];
}

function byType(direction: 'in' | 'out', counts: Record<string, number>): Row[] {
  return Object.entries(counts).map(([type, n]): Row => [{ direction, type }, n]);
}

/** Sums rows with the same labels (a reason counted both by the driver and by the core). */
function mergeRows(rows: Row[]): Row[] {
  const merged = new Map<string, Row>();
  for (const [labels, n] of rows) {
    const key = JSON.stringify(labels);
    const seen = merged.get(key);
    if (seen === undefined) merged.set(key, [labels, n]);
    else seen[1] += n;
  }
  return [...merged.values()];
}

/** A counter that follows a total kept elsewhere, read when scraped. */
function syncedCounter(registers: Registry[], name: string, help: string, labelNames: string[], rows: () => Row[]): void {
  const last = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames,
    registers,
    collect() {
      for (const [labels, total] of rows()) {
        const key = JSON.stringify(labels);
        const delta = total - (last.get(key) ?? 0);
        last.set(key, total);
        // inc(0) still creates the series, so a reason seen with a zero total is listed.
        this.inc(labels, Math.max(0, delta));
      }
    },
  });
}

/** A gauge whose value is read when scraped. */
function readGauge(registers: Registry[], name: string, help: string, labelNames: string[], rows: () => Row[]): void {
  new Gauge({
    name,
    help,
    labelNames,
    registers,
    collect() {
      this.reset();
      for (const [labels, value] of rows()) this.set(labels, value);
    },
  });
}
