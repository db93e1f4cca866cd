// POST /v1/control/{pause,unpause,suspend,resume,stop} issues a lifecycle command at this node
// and waits until this node reaches the command's target state: there are no ACKs, the ranks
// apply commands in control rounds and every node sees the agreed state. GET /v1/lifecycle
// shows the state, the commands allowed in it and the last transitions with their timings.
//
//   200  the target state was reached: { command, id, state, target, version, epoch, tookMs, noop }
//   409  the command is illegal in this node's state, or a control round dropped it:
//        { error: { code: 'illegal-command', state, allowed, message } }
//   504  the target was not reached within the timeout: { error: { code: 'timeout', state, target, id } }
import { Hono } from 'hono';
import { z } from 'zod';
import type { CommandKind, LifecycleState } from '../../mesh/rawnode.ts';
import type { CommandDropped, MeshDriver } from '../mesh/driver.ts';
import { ApiError, validBody } from './errors.ts';
import { describeRoutes, type RouteDoc } from './openapi.ts';

/** What the routes need of the driver. */
export type ControlDriver = Pick<MeshDriver, 'core' | 'command' | 'transitions' | 'on' | 'off'>;

export interface ControlOptions {
  /** Default wait for the target state (a body's timeoutMs overrides it). */
  readonly timeoutMs: number;
}

/** The state each command leads to once every rank has done its part. */
export const TARGET_STATE: Record<CommandKind, LifecycleState> = {
  PAUSE: 'PAUSED',
  UNPAUSE: 'RUNNING',
  SUSPEND: 'SUSPENDED',
  RESUME: 'PAUSED',
  STOP: 'STOPPED',
};

export const controlBodySchema = z.strictObject({
  /** How long to wait for the target state, at most (ms). */
  timeoutMs: z.number().int().min(1).max(600_000).optional(),
  /** A mesh-unique command id: issuing the same id twice applies it once. */
  id: z.string().regex(/^[A-Za-z0-9._:+=-]{1,64}$/, 'expected 1-64 of A-Z a-z 0-9 . _ : + = -').optional(),
});

const commandOfPath: Record<string, CommandKind> = { pause: 'PAUSE', unpause: 'UNPAUSE', suspend: 'SUSPEND', resume: 'RESUME', stop: 'STOP' };

export function controlRoutes(driver: ControlDriver, options: ControlOptions): Hono {
  return describeRoutes(controlModule(driver, options), controlRouteDocs);
}

/** The OpenAPI descriptions of the routes below. */
export const controlRouteDocs: readonly RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/lifecycle',
    tag: 'lifecycle',
    summary: 'The lifecycle state, the commands allowed in it and the last transitions with their timings',
    responses: {
      200: {
        description: 'This node\'s copy of the agreed lifecycle state',
        schema: z.looseObject({
          generation: z.number().int(),
          epoch: z.number().int(),
          state: z.string().describe('RUNNING, PAUSING, PAUSED, SUSPENDING, SUSPENDED, RESUMING, STOPPING or STOPPED'),
          version: z.number().int(),
          allowed: z.array(z.string()),
          transient: z.boolean(),
          localDone: z.boolean(),
          pending: z.array(z.unknown()),
          transitions: z.array(z.looseObject({ state: z.string(), previous: z.string(), atMs: z.number(), previousMs: z.number().nullable() })),
        }),
      },
    },
  },
  {
    method: 'post',
    path: '/v1/control/:command',
    tag: 'lifecycle',
    summary: 'Issues a lifecycle command at this node and waits until this node reaches its target state',
    description: 'PAUSE → PAUSED, UNPAUSE → RUNNING, SUSPEND → SUSPENDED, RESUME → PAUSED, STOP → STOPPED. The command spreads to every rank; there are no ACKs.',
    params: z.object({ command: z.enum(Object.keys(commandOfPath) as [string, ...string[]]).describe('The command, lower case') }),
    body: controlBodySchema,
    bodyRequired: false,
    responses: {
      200: {
        description: 'The target state was reached',
        schema: z.object({
          command: z.string(),
          id: z.string(),
          state: z.string(),
          target: z.string(),
          version: z.number().int(),
          epoch: z.number().int(),
          tookMs: z.number(),
          noop: z.boolean().describe('The node was already in the target state; nothing was issued'),
        }),
      },
      400: { description: 'bad-request: the body is not valid' },
      404: { description: 'not-found: no such command' },
      409: { description: 'illegal-command: not allowed in this node\'s state, or a control round dropped it' },
      503: { description: 'no-view: this node has not joined a mesh yet' },
      504: { description: 'timeout: the target state was not reached within timeoutMs' },
    },
  },
];

function controlModule(driver: ControlDriver, options: ControlOptions): Hono {
  return new Hono()
    .get('/v1/lifecycle', (c) => {
      const info = driver.core.lifecycle();
      return c.json({
        generation: info.generation,
        epoch: info.epoch,
        state: info.state,
        version: info.version,
        allowed: info.allowed,
        transient: info.transient,
        localDone: info.localDone,
        pending: info.pending,
        transitions: driver.transitions(),
      });
    })
    .post('/v1/control/:command', async (c) => {
      const path = c.req.param('command');
      const kind = commandOfPath[path];
      if (kind === undefined) throw new ApiError(404, 'not-found', `no command '${path}' (one of ${Object.keys(commandOfPath).join(', ')})`);
      const body = await optionalJson(c.req.raw);
      const parsed = validBody(controlBodySchema, body ?? {});
      const timeoutMs = parsed.timeoutMs ?? options.timeoutMs;
      const outcome = await issueAndWait(driver, kind, parsed.id, timeoutMs);
      return c.json(outcome);
    });
}

export interface ControlOutcome {
  readonly command: CommandKind;
  readonly id: string;
  readonly state: LifecycleState;
  readonly target: LifecycleState;
  readonly version: number;
  readonly epoch: number;
  readonly tookMs: number;
  /** The node was already in the target state (e.g. PAUSE while PAUSED): nothing was issued. */
  readonly noop: boolean;
}

/** Issues `kind` at this node and waits for the target state; throws ApiError 409/503/504. */
export async function issueAndWait(driver: ControlDriver, kind: CommandKind, id: string | undefined, timeoutMs: number): Promise<ControlOutcome> {
  const { core } = driver;
  const startedMs = performance.now();
  const target = TARGET_STATE[kind];
  const outcome = (cid: string, noop: boolean): ControlOutcome => {
    const info = core.lifecycle();
    return { command: kind, id: cid, state: info.state, target, version: info.version, epoch: info.epoch, tookMs: Math.round(performance.now() - startedMs), noop };
  };
  if (core.view() === null) throw new ApiError(503, 'no-view', 'this node has not joined a mesh yet (no committed view); try again once GET /v1/view answers');
  let check = core.checkCommand(kind);
  // A node without a rank learns the agreed state from the ranks' heartbeats, so right after
  // a transition it may lag by a heartbeat: give it that long to catch up before refusing.
  if (!check.ok && core.rank() < 0) {
    const untilMs = performance.now() + Math.min(timeoutMs, HEARD_LAG_MS);
    while (!check.ok && performance.now() < untilMs) {
      await lifecycleChangeWithin(driver, untilMs - performance.now());
      check = core.checkCommand(kind);
    }
  }
  if (!check.ok) throw illegal(core.lifecycleState(), check.allowed, check.reason);
  if (check.noop && core.lifecycleState() === target) return outcome(id ?? '-', true);

  let cid: string;
  try {
    cid = driver.command(kind, id);
  } catch (err) {
    throw new ApiError(400, 'bad-request', (err as Error).message);
  }
  const reached = () => core.lifecycleState() === target;
  if (reached()) return outcome(cid, false);
  return await new Promise<ControlOutcome>((resolve, reject) => {
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      driver.off('lifecycle', onLifecycle);
      driver.off('commandDropped', onDropped);
      settle();
    };
    const onLifecycle = () => {
      if (reached()) finish(() => resolve(outcome(cid, false)));
    };
    const onDropped = (dropped: CommandDropped) => {
      if (dropped.id === cid) finish(() => reject(illegal(dropped.state, dropped.allowed, `a control round dropped it: ${dropped.reason}`)));
    };
    const timer = setTimeout(() => {
      const state = core.lifecycleState();
      finish(() =>
        reject(
          new ApiError(504, 'timeout', `${kind} did not reach ${target} within ${timeoutMs} ms; this node is ${state}`, {
            id: cid,
            state,
            target,
            command: kind,
          }),
        ),
      );
    }, timeoutMs);
    driver.on('lifecycle', onLifecycle);
    driver.on('commandDropped', onDropped);
  });
}

/** How long a node without a rank may lag the ranks' agreed state (a few heartbeats). */
const HEARD_LAG_MS = 1500;

/** Resolves on the driver's next lifecycle change, or after `ms`. */
function lifecycleChangeWithin(driver: ControlDriver, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      driver.off('lifecycle', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    driver.on('lifecycle', done);
  });
}

function illegal(state: LifecycleState, allowed: readonly CommandKind[], reason: string): ApiError {
  return new ApiError(409, 'illegal-command', reason, { state, allowed });
}

/** The body as JSON, or undefined when there is none; a body that is not JSON is a 400. */
async function optionalJson(req: Request): Promise<unknown> {
  const text = await req.text();
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'bad-request', 'the body must be empty or JSON: { "timeoutMs"?: number, "id"?: string }');
  }
}
