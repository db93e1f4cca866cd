// Demand and the plan over HTTP. POST /v1/pipelines/:name/demand opens a durable demand
// record (stored and gossiped before anything else) and blocks until a completed plan round
// assigns the pipeline at least one rank and one of them reports serving it (awake: drained,
// model loaded, group communicator up), so two pipelines signalling together cannot starve
// each other. Progress and DELETE close the record; GET /v1/pipelines shows records, progress
// and the ranks each pipeline holds in the current plan.
//
//   201  { record, ranks, awake, round, waitedMs, created }
//   400  bad-request: the body or a name is invalid; nothing was stored
//   404  unknown-pipeline (not in the node's pipelines list) or unknown-record
//   504  timeout: no rank was assigned in time; the record stays open: { error: { code, message, id } }
import { Hono } from 'hono';
import { z } from 'zod';
import { DemandError, type DemandRecord, PRIORITY_MAX, doneSteps, remainingSteps } from '../../mesh/demand.ts';
import { DemandTimeoutError } from '../demand/service.ts';
import type { DemandService } from '../demand/service.ts';
import { ApiError, validBody } from './errors.ts';
import { describeRoutes, type RouteDoc } from './openapi.ts';

export interface DemandRouteOptions {
  /** Default wait for a rank (a body's timeoutMs overrides it). */
  readonly timeoutMs: number;
  /** Pipelines this node accepts demand for; undefined accepts any valid name. */
  readonly pipelines?: readonly string[];
}

const nameSchema = z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'expected 1-64 of A-Z a-z 0-9 . _ : -');
const idSchema = z.string().regex(/^[A-Za-z0-9._-]{1,40}$/, 'expected 1-40 of A-Z a-z 0-9 . _ -');

export const demandBodySchema = z.strictObject({
  steps: z.number().int().min(1).max(2 ** 31 - 1).describe('Step target: the work this demand asks for'),
  priority: z.number().int().min(0).max(PRIORITY_MAX).optional().describe('Higher is served first when ranks are scarce (default 0)'),
  id: idSchema.optional().describe('A caller-chosen record id: opening the same id twice opens one record'),
  timeoutMs: z.number().int().min(1).max(600_000).optional().describe('How long to wait for a rank, at most (ms)'),
});

export const progressBodySchema = z.strictObject({
  completed: z.number().int().min(0).max(2 ** 31 - 1).describe('Steps completed since the last report'),
});

const recordSchema = z.object({
  id: z.string(),
  pipeline: z.string(),
  steps: z.number().int(),
  priority: z.number().int(),
  done: z.number().int().describe('Steps done in all (progress counted at every node)'),
  remaining: z.number().int(),
  closed: z.boolean(),
});
const roundSchema = z.object({ generation: z.number().int(), epoch: z.number().int(), seq: z.number().int() }).nullable().describe('The plan round the assignment comes from');

export function demandRoutes(service: DemandService, options: DemandRouteOptions): Hono {
  return describeRoutes(demandModule(service, options), demandRouteDocs);
}

export const demandRouteDocs: readonly RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/pipelines',
    tag: 'demand',
    summary: 'Demand records, their progress, and the ranks each pipeline holds in the current plan',
    responses: {
      200: {
        description: 'This node\'s registry and plan',
        schema: z.object({
          round: roundSchema,
          digest: z.string().describe('Digest of this node\'s records; equal on nodes that know the same'),
          pipelines: z.array(z.object({ name: z.string(), remaining: z.number().int(), priority: z.number().int(), ranks: z.array(z.number().int()).nullable(), awake: z.array(z.number().int()).nullable().describe('Ranks of the pipeline that report serving it now'), records: z.array(recordSchema) })),
          assignment: z.array(z.object({ rank: z.number().int(), pipeline: z.string().nullable() })),
        }),
      },
    },
  },
  {
    method: 'post',
    path: '/v1/pipelines/:name/demand',
    tag: 'demand',
    summary: 'Opens a demand record and waits until a plan round assigns the pipeline a rank and that rank serves it',
    params: z.object({ name: nameSchema }),
    body: demandBodySchema,
    bodyRequired: true,
    responses: {
      201: { description: 'A rank serves the pipeline', schema: z.object({ record: recordSchema, ranks: z.array(z.number().int()), awake: z.array(z.number().int()).describe('Ranks that report serving the pipeline (at least one)'), round: roundSchema, waitedMs: z.number(), created: z.boolean() }) },
      400: { description: 'bad-request: invalid body or name; nothing was stored' },
      404: { description: 'unknown-pipeline: not in this node\'s pipelines setting' },
      409: { description: 'full: too many records are open on this node' },
      504: { description: 'timeout: no rank assigned, or none awake, in time, with the reason; the record stays open' },
    },
  },
  {
    method: 'post',
    path: '/v1/pipelines/:name/demand/:id/progress',
    tag: 'demand',
    summary: 'Reports steps completed for a demand record (ignored once it is closed); reaching the target closes it',
    params: z.object({ name: nameSchema, id: idSchema }),
    body: progressBodySchema,
    bodyRequired: true,
    responses: {
      200: { description: 'The record after the report', schema: z.object({ record: recordSchema, changed: z.boolean() }) },
      400: { description: 'bad-request: invalid body' },
      404: { description: 'unknown-record' },
    },
  },
  {
    method: 'delete',
    path: '/v1/pipelines/:name/demand/:id',
    tag: 'demand',
    summary: 'Closes a demand record (closing twice is harmless)',
    params: z.object({ name: nameSchema, id: idSchema }),
    responses: {
      200: { description: 'The closed record', schema: z.object({ record: recordSchema, changed: z.boolean() }) },
      404: { description: 'unknown-record' },
    },
  },
];

function demandModule(service: DemandService, options: DemandRouteOptions): Hono {
  const pipelineOf = (raw: string): string => {
    const parsed = nameSchema.safeParse(raw);
    if (!parsed.success) throw new ApiError(400, 'bad-request', `pipeline name: ${parsed.error.issues[0]!.message}`);
    if (options.pipelines !== undefined && !options.pipelines.includes(parsed.data)) {
      throw new ApiError(404, 'unknown-pipeline', `no pipeline ${parsed.data} on this node (configured: ${options.pipelines.join(', ')})`);
    }
    return parsed.data;
  };
  return new Hono()
    .get('/v1/pipelines', (c) => {
      const plan = service.plans.current();
      const byName = new Map<string, DemandRecord[]>();
      for (const r of service.records()) byName.set(r.pipeline, [...(byName.get(r.pipeline) ?? []), r]);
      for (const name of options.pipelines ?? []) if (!byName.has(name)) byName.set(name, []);
      for (const [, p] of plan?.assignment ?? []) if (p !== null && !byName.has(p)) byName.set(p, []);
      const pipelines = [...byName.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, records]) => ({
          name,
          remaining: records.reduce((s, r) => s + remainingSteps(r), 0),
          priority: records.filter((r) => !r.closed).reduce((s, r) => Math.max(s, r.priority), 0),
          ranks: service.plans.ranksFor(name),
          awake: service.ranksOf(name)?.awake ?? null,
          records: records.map(recordBody),
        }));
      const assignment = (plan?.assignment ?? []).map(([rank, pipeline]) => ({ rank, pipeline }));
      return c.json({ round: service.plans.round, digest: service.digest(), pipelines, assignment });
    })
    .post('/v1/pipelines/:name/demand', async (c) => {
      const pipeline = pipelineOf(c.req.param('name'));
      const body = validBody(demandBodySchema, await jsonBody(c.req.raw));
      const startedMs = performance.now();
      const { record, created } = call(() => service.open({ pipeline, steps: body.steps, ...(body.priority !== undefined ? { priority: body.priority } : {}), ...(body.id !== undefined ? { id: body.id } : {}) }));
      const timeoutMs = body.timeoutMs ?? options.timeoutMs;
      let held: { ranks: readonly number[]; awake: readonly number[] };
      try {
        held = await service.waitForRanks(pipeline, timeoutMs);
      } catch (err) {
        if (!(err instanceof DemandTimeoutError)) throw err;
        throw new ApiError(504, 'timeout', `no rank serving ${pipeline} within ${timeoutMs} ms: ${err.message}; record ${record.id} stays open`, { id: record.id });
      }
      const now = service.records().find((r) => r.id === record.id) ?? record;
      return c.json({ record: recordBody(now), ranks: held.ranks, awake: held.awake, round: service.plans.round, waitedMs: Math.round(performance.now() - startedMs), created }, 201);
    })
    .post('/v1/pipelines/:name/demand/:id/progress', async (c) => {
      const pipeline = pipelineOf(c.req.param('name'));
      const id = parseId(c.req.param('id'));
      const body = validBody(progressBodySchema, await jsonBody(c.req.raw));
      const { record, changed } = call(() => service.progress(pipeline, id, body.completed));
      return c.json({ record: recordBody(record), changed });
    })
    .delete('/v1/pipelines/:name/demand/:id', (c) => {
      const pipeline = pipelineOf(c.req.param('name'));
      const id = parseId(c.req.param('id'));
      const { record, changed } = call(() => service.close(pipeline, id));
      return c.json({ record: recordBody(record), changed });
    });
}

function recordBody(r: DemandRecord) {
  return { id: r.id, pipeline: r.pipeline, steps: r.steps, priority: r.priority, done: doneSteps(r), remaining: remainingSteps(r), closed: r.closed };
}

/** Runs a service call, mapping its typed errors to statuses. */
function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof DemandError)) throw err;
    if (err.code === 'unknown-record') throw new ApiError(404, 'unknown-record', err.message);
    if (err.code === 'full') throw new ApiError(409, 'full', err.message);
    throw new ApiError(400, 'bad-request', err.message);
  }
}

function parseId(raw: string): string {
  const parsed = idSchema.safeParse(raw);
  if (!parsed.success) throw new ApiError(400, 'bad-request', `record id: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

async function jsonBody(req: Request): Promise<unknown> {
  const text = await req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'bad-request', 'the body must be JSON');
  }
}
