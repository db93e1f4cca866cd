// The HTTP fuzz target: a real node (libp2p, core, rank, storage, HTTP server) in this
// process, and every route that takes a body — found in the node's own /openapi.json, so a
// new route is fuzzed without a change here — sent arbitrary and near-valid bodies over
// real HTTP with the right token. A refusal must be a 4xx with a JSON { error: { code,
// message } } and nothing internal in it, and must leave the node's state as it was; no
// input may get a 500 or go unanswered.
import fc from 'fast-check';
import pino from 'pino';
import { loadConfig } from '../../node/config.ts';
import { Runtime } from '../../node/runtime.ts';
import { tempDir, waitFor } from '../node/helpers.ts';
import { inputsLike, type FuzzTarget, type Harness, type Outcome } from './targets.ts';

export interface HttpInput {
  /** Picks the route (modulo the number of routes found). */
  readonly route: number;
  /** Values for the route's path parameters, in order. */
  readonly params: readonly string[];
  readonly body: Uint8Array;
  readonly contentType: string;
}

/** Commands whose success would end or freeze the node under test; the fuzzer never names them. */
const ENDING_COMMANDS = new Set(['pause', 'stop', 'suspend']);
const TOKEN = 'fuzz-token';
/** An answer slower than this is a failure: a refusal must be quick. */
const ANSWER_MS_MAX = 5000;

interface Route {
  readonly method: string;
  /** Path with its parameters as {name}. */
  readonly path: string;
  readonly params: readonly { name: string; values: readonly string[] }[];
  /** A body that fits the documented schema, with the smallest values allowed. */
  readonly skeleton: unknown;
}

const segment = fc.oneof(fc.stringMatching(/^[A-Za-z0-9._~-]{1,20}$/), fc.string({ maxLength: 12 }).map(encodeURIComponent), fc.constantFrom('default', 'chat', 'r1', '..', '%00'));

export function httpTarget(): FuzzTarget<HttpInput> {
  // The body generator needs the routes, which only the running node knows; it draws an index
  // and a near-valid body around a generic skeleton, and the harness fits them to the route.
  const input = fc.record({
    route: fc.nat(),
    params: fc.array(segment, { minLength: 3, maxLength: 3 }),
    body: fc.oneof(inputsLike(fc.jsonValue({ maxDepth: 3 })), fc.constant(new Uint8Array())),
    contentType: fc.constantFrom('application/json', 'application/json', 'text/plain', 'application/x-www-form-urlencoded'),
  });
  return { name: 'HTTP bodies → a real node', input, open: openNode };
}

async function openNode(): Promise<Harness<HttpInput>> {
  const dir = tempDir('rankmesh-fuzz-');
  const loaded = loadConfig({
    argv: ['--data-dir', dir.path, '--http-addr', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--world-size', '1', '--token', TOKEN, '--log-level', 'silent', '--http-mutations-per-second', '1000000', '--http-mutation-burst', '1000000'],
  });
  if (loaded.kind !== 'config') throw new Error('the fuzz node config printed help');
  const runtime = new Runtime(loaded.config, pino({ level: 'silent' }));
  const node = await runtime.start();
  const url = node.httpUrl;
  // Fuzz a settled node: its view formed, its first plan round done (planSettleMs after the
  // view) and its rank serving, so nothing changes on its own.
  await waitFor('the fuzz node to form its view, plan and serve', async () => {
    const rank = await fetch(`${url}/v1/rank`).then((r) => r.json() as Promise<{ serving?: boolean }>);
    return rank.serving === true && runtime.driver.core.view() !== null && runtime.demand.plans.round !== null;
  }, 30_000);
  const routes = await routesOf(url);
  if (routes.length === 0) throw new Error('the node documents no route that takes a body');
  let skeletonTurn = 0;

  const read = async (path: string): Promise<unknown> => {
    const res = await fetch(`${url}${path}`);
    return res.ok ? res.json() : res.status;
  };
  const state = async () => ({
    lifecycle: await read('/v1/lifecycle').then((l) => (typeof l === 'object' && l !== null ? { ...(l as object), transitions: undefined } : l)),
    view: await read('/v1/view'),
    pipelines: await read('/v1/pipelines'),
    rank: await read('/v1/rank').then((r) => (r as { requests?: unknown; queueLength?: unknown }).requests ?? r),
    ingress: { ...runtime.ingress.counters },
  });
  /** No accepted work still running: what an earlier input started must not land inside the next one's comparison. */
  const settled = async (): Promise<boolean> => {
    const c = runtime.ingress.counters;
    const rank = (await read('/v1/rank')) as { queueLength?: number; requests?: { accepted: number; completed: number; failed: number; timedOut: number } };
    const r = rank.requests;
    return c.accepted === c.done + c.failed && rank.queueLength === 0 && (r === undefined || r.accepted === r.completed + r.failed + r.timedOut);
  };

  return {
    prepare: () => waitFor('the node to finish the work of earlier inputs', settled, ANSWER_MS_MAX),
    async feed(input): Promise<Outcome> {
      const route = routes[input.route % routes.length]!;
      let path = route.path;
      route.params.forEach((p, i) => {
        const drawn = input.params[i] ?? 'x';
        // Half the time a documented value (never one that ends the node), else anything.
        const allowed = p.values.filter((v) => !ENDING_COMMANDS.has(v));
        const value = allowed.length > 0 && input.route % 2 === 0 ? allowed[input.route % allowed.length]! : ENDING_COMMANDS.has(drawn) ? `${drawn}x` : drawn;
        path = path.replace(`{${p.name}}`, value);
      });
      // Refusals by method and status, whichever route pattern answered ('..' in a path, say,
      // leads to another route or none).
      const counted = async (status: number): Promise<number> => {
        const values = (await runtime.metrics.httpRequests.get()).values;
        return values.filter((v) => v.labels.method === route.method.toUpperCase() && v.labels.status === String(status)).reduce((sum, v) => sum + v.value, 0);
      };
      const countsBefore = new Map<number, number>();
      for (const status of [400, 404, 409, 413, 415, 422, 429]) countsBefore.set(status, await counted(status));
      // Every fourth input is the route's own skeleton, so bodies that fit reach the handlers.
      const body = skeletonTurn++ % 4 === 0 ? new TextEncoder().encode(JSON.stringify(route.skeleton)) : input.body;
      const res = await fetch(`${url}${path}`, {
        method: route.method.toUpperCase(),
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': input.contentType },
        body: body.byteLength > 0 ? body : undefined,
        signal: AbortSignal.timeout(ANSWER_MS_MAX),
      });
      const text = await res.text();
      if (res.status >= 500 && res.status !== 503 && res.status !== 504) throw new Error(`${route.method.toUpperCase()} ${path} answered ${res.status}: ${text.slice(0, 200)}`);
      if (/\bat .+:\d+:\d+|node_modules|\.ts:\d+/.test(text)) throw new Error(`${route.method.toUpperCase()} ${path} answered with internals: ${text.slice(0, 300)}`);
      // 504: a valid demand that no rank took in time stays open (the documented contract).
      if (res.status < 400 || res.status === 504) return { accepted: true };
      let parsed: { error?: { code?: unknown; message?: unknown } };
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new Error(`${route.method.toUpperCase()} ${path} answered ${res.status} without a JSON body: ${text.slice(0, 200)}`);
      }
      const { code, message } = parsed.error ?? {};
      if (typeof code !== 'string' || typeof message !== 'string') throw new Error(`${route.method.toUpperCase()} ${path} answered ${res.status} without { error: { code, message } }`);
      // The node's own metrics count every refusal by route and status.
      const isCounted = countsBefore.has(res.status) && (await counted(res.status)) === countsBefore.get(res.status)! + 1;
      return { accepted: false, reason: `${route.method.toUpperCase()} ${route.path} ${res.status} ${code}`, counted: isCounted };
    },
    state,
    async close() {
      await runtime.stop();
      dir.remove();
    },
  };
}

async function routesOf(url: string): Promise<Route[]> {
  const doc = (await (await fetch(`${url}/openapi.json`)).json()) as {
    paths: Record<string, Record<string, { parameters?: { name: string; in: string; schema?: { enum?: string[] } }[]; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>>;
  };
  const routes: Route[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      if (!['post', 'put', 'patch', 'delete'].includes(method)) continue;
      const params = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => ({ name: p.name, values: p.schema?.enum ?? [] }));
      const schema = op.requestBody?.content?.['application/json']?.schema;
      routes.push({ method, path: path.replace(/:([A-Za-z0-9_]+)/g, '{$1}'), params, skeleton: schema ? skeletonOf(schema) : {} });
    }
  }
  return routes.sort((a, b) => (a.path + a.method < b.path + b.method ? -1 : 1));
}

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  enum?: unknown[];
  minimum?: number;
  minItems?: number;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
}

/** The smallest value a JSON schema allows, property by property (optional ones included). */
function skeletonOf(schema: JsonSchema): unknown {
  if (schema.enum && schema.enum.length > 0) return schema.enum[0];
  const alt = schema.anyOf ?? schema.oneOf;
  if (alt && alt.length > 0) return skeletonOf(alt[0]!);
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object':
      return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, v]) => [k, skeletonOf(v)]));
    case 'array':
      return Array.from({ length: Math.max(1, schema.minItems ?? 1) }, () => skeletonOf(schema.items ?? {}));
    case 'integer':
    case 'number':
      return Math.max(1, schema.minimum ?? 1);
    case 'boolean':
      return true;
    case 'string':
      return 'default';
    default:
      return null;
  }
}
