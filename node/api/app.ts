// The HTTP API of a node: small route modules composed into one Hono app, one error handler,
// and the bearer-token guard in front of every mutating route. Every module describes its
// routes (openapi.ts); the app collects the descriptions into /openapi.json and /docs.
import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Db } from '../storage/database.ts';
import { requireTokenForMutations } from './auth.ts';
import { errorHandler, notFound } from './errors.ts';
import { type RequestLimits, requestLimitDefaults, requestLimits } from './limits.ts';
import { healthRoutes } from './health.ts';
import { statusRoutes, type NodeInfo } from './status.ts';
import { dashboardRoutes } from './dashboard.ts';
import { type EventSources, eventsRoutes } from './events.ts';
import { describeRoutes, openApiRoutes, routeDocsOf, type RouteDoc } from './openapi.ts';
import type { NodeMetrics } from '../metrics/metrics.ts';
import { httpMetrics } from '../metrics/http.ts';
import { metricsRoutes } from '../metrics/routes.ts';

export interface AppDeps {
  info: NodeInfo;
  db: Db;
  token: string;
  log: Logger;
  /** Route modules of the running node's other parts (mesh, rank), mounted after the base ones. */
  routes?: readonly Hono[];
  /** Body size and mutation rate limits (default requestLimitDefaults). */
  limits?: RequestLimits;
  /** The node's metrics: every request is measured, and GET /metrics serves them. */
  metrics?: NodeMetrics;
  /** Subscribes to changes the dashboard's event stream pushes at once; returns the unsubscribe. */
  onChange?: (listener: () => void) => () => void;
  /** Aborted when the node stops, so open event streams end and HTTP stop does not wait on them. */
  stopping?: AbortSignal;
}

/** Base routes are mounted here; the runtime passes the modules of its other parts in `routes`. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono().onError(errorHandler(deps.log)).notFound(notFound);
  if (deps.metrics !== undefined) app.use('*', httpMetrics(deps.metrics));
  for (const limit of requestLimits(deps.limits ?? requestLimitDefaults)) app.use('*', limit);
  app.use('*', requireTokenForMutations(deps.token));
  // The dashboard reads its panels through the same route modules, mounted a second time on
  // an app of their own, so its reads are neither measured nor guarded as client requests.
  const panels = new Hono().onError(errorHandler(deps.log)).notFound(notFound);
  const docs: RouteDoc[] = [];
  const metrics = deps.metrics;
  const panelSources: EventSources = {
    get: async (path: string) => panels.request(path),
    totals: (): Record<string, number> => (metrics === undefined ? {} : { 'http requests': metrics.httpAnswered }),
    ...(deps.onChange !== undefined ? { onChange: deps.onChange } : {}),
    ...(deps.stopping !== undefined ? { stopping: deps.stopping } : {}),
  };
  const modules: Hono[] = [
    healthRoutes(),
    statusRoutes(deps.info, deps.db),
    ...(metrics !== undefined ? [metricsRoutes(metrics)] : []),
    ...(deps.routes ?? []),
    eventsRoutes(panelSources),
    dashboardRoutes(panelSources),
    openApiRoutes(() => docs, { title: 'rankmesh node', version: deps.info.version }),
  ];
  for (const module of modules) {
    app.route('/', module);
    panels.route('/', module);
    docs.push(...routeDocsOf(module));
  }
  // The app carries the collected descriptions too, so a test can hold them against its routes.
  return describeRoutes(app, docs);
}
