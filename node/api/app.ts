// The HTTP API of a node: small route modules composed into one Hono app, one error handler,
// and the bearer-token guard in front of every mutating route.
import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Db } from '../storage/database.ts';
import { requireTokenForMutations } from './auth.ts';
import { errorHandler, notFound } from './errors.ts';
import { healthRoutes } from './health.ts';
import { statusRoutes, type NodeInfo } from './status.ts';

export interface AppDeps {
  info: NodeInfo;
  db: Db;
  token: string;
  log: Logger;
  /** Route modules of the running node's other parts (mesh, rank), mounted after the base ones. */
  routes?: readonly Hono[];
}

/** Base routes are mounted here; the runtime passes the modules of its other parts in `routes`. */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono()
    .onError(errorHandler(deps.log))
    .notFound(notFound)
    .use('*', requireTokenForMutations(deps.token))
    .route('/', healthRoutes())
    .route('/', statusRoutes(deps.info, deps.db));
  for (const module of deps.routes ?? []) app.route('/', module);
  return app;
}
