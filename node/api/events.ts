// GET /v1/events: a server-sent event stream of dashboard snapshots — the node's view,
// lifecycle, rank, pipelines, status and members, each as its own GET route answers it. A
// snapshot goes out at once, again on every change the node reports (a committed view, a
// lifecycle transition), and at least every intervalMs. Panels are read through the app's own
// routes, so a route another part of the node adds later shows up without a change here, and
// one that does not exist (404) is sent as unavailable instead of failing the stream.
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { z } from 'zod';
import { describeRoutes } from './openapi.ts';

/** The routes a snapshot reads, by panel name. */
export const snapshotRoutes = {
  status: '/v1/status',
  view: '/v1/view',
  members: '/v1/members',
  lifecycle: '/v1/lifecycle',
  rank: '/v1/rank',
  pipelines: '/v1/pipelines',
} as const;

export type PanelName = keyof typeof snapshotRoutes;

/** One panel: the route's JSON body, or why there is none (status 404: the node has no such route). */
export type Panel = { readonly ok: true; readonly body: unknown } | { readonly ok: false; readonly status: number; readonly reason: string };

export interface Snapshot {
  /** Wall-clock time the snapshot was taken (ms since the epoch). */
  readonly atMs: number;
  readonly panels: Readonly<Record<PanelName, Panel>>;
  /** Running totals for rates (the dashboard divides their differences by time). */
  readonly totals: Readonly<Record<string, number>>;
}

export interface EventSources {
  /** Answers a GET of one of this node's own routes (the app's request()). */
  get(path: string): Promise<Response>;
  /** Calls `listener` on every change worth pushing at once; returns the unsubscribe. */
  onChange?(listener: () => void): () => void;
  /** Running totals to send along (e.g. HTTP requests answered). */
  totals?(): Record<string, number>;
  /** Aborted when the node stops: every open stream ends, so HTTP stop does not wait for them. */
  readonly stopping?: AbortSignal;
}

export interface EventsOptions {
  /** Longest time between two snapshots. Default 1000. */
  readonly intervalMs?: number;
  /** A stream ends after this long; browsers reconnect on their own. Default 300000. */
  readonly streamMs?: number;
}

/** Reads every panel once. */
export async function takeSnapshot(sources: Pick<EventSources, 'get' | 'totals'>): Promise<Snapshot> {
  const names = Object.keys(snapshotRoutes) as PanelName[];
  const panels = await Promise.all(names.map((name) => readPanel(sources, snapshotRoutes[name])));
  return {
    atMs: Date.now(),
    panels: Object.fromEntries(names.map((name, i) => [name, panels[i]!])) as Record<PanelName, Panel>,
    totals: sources.totals?.() ?? {},
  };
}

export function eventsRoutes(sources: EventSources, options: EventsOptions = {}): Hono {
  const intervalMs = options.intervalMs ?? 1000;
  const streamMs = options.streamMs ?? 300_000;
  const module = new Hono()
    .get('/v1/dashboard/snapshot', async (c) => c.json(await takeSnapshot(sources)))
    .get('/v1/events', (c) =>
      streamSSE(c, async (stream) => {
        const endAtMs = performance.now() + streamMs;
        let wake: (() => void) | null = null;
        let changed = false;
        const poke = (): void => {
          changed = true;
          wake?.();
        };
        const off = sources.onChange?.(poke);
        const onStop = (): void => void stream.abort();
        sources.stopping?.addEventListener('abort', onStop);
        stream.onAbort(() => wake?.());
        try {
          let id = 0;
          while (!stream.aborted && !stream.closed && sources.stopping?.aborted !== true && performance.now() < endAtMs) {
            changed = false;
            const snapshot = await takeSnapshot(sources);
            await stream.writeSSE({ event: 'snapshot', id: String(++id), data: JSON.stringify(snapshot), retry: 1000 });
            if (changed) continue;
            await new Promise<void>((resolve) => {
              const timer = setTimeout(done, intervalMs);
              function done(): void {
                clearTimeout(timer);
                wake = null;
                resolve();
              }
              wake = done;
            });
          }
        } finally {
          off?.();
          sources.stopping?.removeEventListener('abort', onStop);
        }
      }),
    );
  return describeRoutes(module, [
    {
      method: 'get',
      path: '/v1/events',
      tag: 'dashboard',
      summary: 'Server-sent events: a dashboard snapshot at once, on every change, and every second',
      description: `Each event is named snapshot; its data is the JSON of GET /v1/dashboard/snapshot. A stream ends after ${streamMs / 1000} s and when the node stops; EventSource reconnects on its own.`,
      responses: { 200: { description: 'An event stream', contentType: 'text/event-stream' } },
    },
    {
      method: 'get',
      path: '/v1/dashboard/snapshot',
      tag: 'dashboard',
      summary: 'Every dashboard panel once: each panel route\'s answer, or why it has none',
      responses: { 200: { description: 'A snapshot', schema: snapshotSchema } },
    },
  ]);
}

const panelSchema = z.union([
  z.object({ ok: z.literal(true), body: z.unknown() }),
  z.object({ ok: z.literal(false), status: z.number().int().describe('The route\'s status; 404: this node has no such route'), reason: z.string() }),
]);

export const snapshotSchema = z.object({
  atMs: z.number(),
  panels: z.object(Object.fromEntries(Object.keys(snapshotRoutes).map((name) => [name, panelSchema]))),
  totals: z.record(z.string(), z.number()),
});

async function readPanel(sources: Pick<EventSources, 'get'>, path: string): Promise<Panel> {
  try {
    const response = await sources.get(path);
    const body: unknown = await response.json().catch(() => null);
    if (response.ok) return { ok: true, body };
    const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
    return { ok: false, status: response.status, reason: typeof message === 'string' ? message : response.statusText || `status ${response.status}` };
  } catch (err) {
    return { ok: false, status: 500, reason: (err as Error).message };
  }
}
