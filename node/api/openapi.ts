// OpenAPI 3.1 for every HTTP route, generated from the zod schemas that validate the requests.
// Each route module describes its routes next to them (describeRoutes) and createApp
// collects the descriptions of the modules it mounts, so a route and its description change
// together; undocumentedRoutes() lists registered routes nobody described, and a test keeps
// that list empty. GET /openapi.json serves the document; GET /docs renders it as a plain
// HTML page (no CDN, no script: nodes and their operators may be offline).
import { Hono } from 'hono';
import { inspectRoutes } from 'hono/dev';
import { html, raw } from 'hono/html';
import { z } from 'zod';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

export interface ResponseDoc {
  readonly description: string;
  /** The body's shape; absent for bodies described only in words. */
  readonly schema?: z.ZodType;
  /** Default application/json. */
  readonly contentType?: string;
}

/** One route as its module describes it. */
export interface RouteDoc {
  readonly method: HttpMethod;
  /** The Hono pattern, e.g. `/v1/requests/:id`. */
  readonly path: string;
  readonly summary: string;
  readonly description?: string;
  readonly tag: string;
  /** Path parameters, by name. */
  readonly params?: z.ZodObject;
  readonly query?: z.ZodObject;
  /** The JSON body, validated by this schema in the route itself. */
  readonly body?: z.ZodType;
  readonly bodyRequired?: boolean;
  readonly responses: Readonly<Record<number, ResponseDoc>>;
}

/** Every error answers this shape (node/api/errors.ts). */
export const errorBodySchema = z
  .object({ error: z.object({ code: z.string().describe('Stable machine-readable code, e.g. bad-request, no-view'), message: z.string() }) })
  .describe('An error');

const docsByModule = new WeakMap<Hono, readonly RouteDoc[]>();

/** Attaches `docs` to a route module; returns the module. */
export function describeRoutes<T extends Hono>(module: T, docs: readonly RouteDoc[]): T {
  docsByModule.set(module, docs);
  return module;
}

/** The descriptions attached to a route module (none if it has none). */
export function routeDocsOf(module: Hono): readonly RouteDoc[] {
  return docsByModule.get(module) ?? [];
}

/** `METHOD /path` of every route registered in `app` that has no description. */
export function undocumentedRoutes(app: Hono, docs: readonly RouteDoc[]): string[] {
  const described = new Set(docs.map((d) => `${d.method.toUpperCase()} ${d.path}`));
  const missing = new Set<string>();
  for (const r of inspectRoutes(app)) {
    if (r.isMiddleware || r.method === 'ALL') continue;
    const key = `${r.method} ${r.path}`;
    if (!described.has(key)) missing.add(key);
  }
  return [...missing];
}

export interface OpenApiInfo {
  readonly title: string;
  readonly version: string;
}

/** The OpenAPI 3.1 document of `docs`, paths and methods in a stable order. */
export function openApiDocument(docs: readonly RouteDoc[], info: OpenApiInfo): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const sorted = [...docs].sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  for (const doc of sorted) {
    const path = toOpenApiPath(doc.path);
    paths[path] ??= {};
    paths[path][doc.method] = operation(doc);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: info.title,
      version: info.version,
      description: 'The HTTP API of one rankmesh node. Any node answers; GET routes are open, every other method needs the bearer token.',
    },
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'The node\'s token (the file token in its data directory, or the token setting)' } },
    },
  };
}

/** GET /openapi.json and GET /docs over the descriptions `docs()` returns when asked. */
export function openApiRoutes(docs: () => readonly RouteDoc[], info: OpenApiInfo): Hono {
  const module = new Hono()
    .get('/openapi.json', (c) => c.json(openApiDocument(docs(), info)))
    .get('/docs', (c) => c.html(docsPage(openApiDocument(docs(), info))));
  return describeRoutes(module, [
    {
      method: 'get',
      path: '/openapi.json',
      tag: 'docs',
      summary: 'This OpenAPI document',
      responses: { 200: { description: 'OpenAPI 3.1 document of every route of this node' } },
    },
    {
      method: 'get',
      path: '/docs',
      tag: 'docs',
      summary: 'The API reference as an HTML page',
      responses: { 200: { description: 'HTML page rendered from /openapi.json', contentType: 'text/html' } },
    },
  ]);
}

function operation(doc: RouteDoc): Record<string, unknown> {
  const parameters = [
    ...parametersOf(doc.params, 'path'),
    ...parametersOf(doc.query, 'query'),
  ];
  const mutating = doc.method !== 'get';
  const responses: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(doc.responses)) {
    const contentType = r.contentType ?? 'application/json';
    const isError = Number(status) >= 400;
    const schema = r.schema ?? (isError && contentType === 'application/json' ? errorBodySchema : undefined);
    responses[status] = {
      description: r.description,
      ...(schema !== undefined ? { content: { [contentType]: { schema: jsonSchema(schema, 'output') } } } : { content: { [contentType]: {} } }),
    };
  }
  if (mutating && responses['401'] === undefined) {
    responses['401'] = { description: 'Missing or wrong bearer token', content: { 'application/json': { schema: jsonSchema(errorBodySchema, 'output') } } };
  }
  return {
    operationId: operationId(doc),
    summary: doc.summary,
    ...(doc.description !== undefined ? { description: doc.description } : {}),
    tags: [doc.tag],
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(doc.body !== undefined
      ? { requestBody: { required: doc.bodyRequired ?? true, content: { 'application/json': { schema: jsonSchema(doc.body, 'input') } } } }
      : {}),
    ...(mutating ? { security: [{ bearer: [] }] } : {}),
    responses,
  };
}

function parametersOf(schema: z.ZodObject | undefined, where: 'path' | 'query'): Record<string, unknown>[] {
  if (schema === undefined) return [];
  return Object.entries(schema.shape).map(([name, field]) => {
    const f = field as z.ZodType;
    return {
      name,
      in: where,
      required: where === 'path' || !f.safeParse(undefined).success,
      ...(f.description !== undefined ? { description: f.description } : {}),
      schema: jsonSchema(f, 'input'),
    };
  });
}

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

function toOpenApiPath(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function operationId(doc: RouteDoc): string {
  const words = doc.path.split('/').filter((p) => p !== '' && p !== 'v1').map((p) => p.replace(/^:/, 'by-').replace(/[^A-Za-z0-9]+/g, '-'));
  return [doc.method, ...words].join('-') || doc.method;
}

/** The reference page: every operation, its parameters, body and responses, schemas as JSON. */
function docsPage(doc: Record<string, unknown>): ReturnType<typeof html> {
  const info = doc.info as { title: string; version: string; description: string };
  const paths = doc.paths as Record<string, Record<string, Operation>>;
  const ops = Object.entries(paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));
  const rank = (tag: string): number => (tagOrder.indexOf(tag) < 0 ? tagOrder.length : tagOrder.indexOf(tag));
  const tags = [...new Set(ops.map((o) => o.op.tags[0] ?? 'other'))].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${info.title} ${info.version} — API</title>
<style>${raw(docsCss)}</style>
</head>
<body>
<h1>${info.title} <small>${info.version}</small></h1>
<p>${info.description} The machine-readable document is <a href="/openapi.json">/openapi.json</a>; the live dashboard is at <a href="/dashboard">/dashboard</a>.</p>
<nav>${tags.map((t) => html`<a href="#tag-${t}">${t}</a> `)}</nav>
${tags.map(
  (tag) => html`<h2 id="tag-${tag}">${tag}</h2>
${ops
  .filter((o) => (o.op.tags[0] ?? 'other') === tag)
  .map(
    ({ path, method, op }) => html`<section class="op" id="${op.operationId}">
<h3><span class="method ${method}">${method.toUpperCase()}</span> <code>${path}</code>${op.security !== undefined ? html` <span class="lock">token</span>` : ''}</h3>
<p>${op.summary}</p>${op.description !== undefined ? html`<p class="desc">${op.description}</p>` : ''}
${(op.parameters ?? []).length > 0
  ? html`<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th><th>schema</th><th>description</th></tr>${(op.parameters ?? []).map(
      (p) => html`<tr><td><code>${p.name}</code></td><td>${p.in}</td><td>${p.required ? 'yes' : 'no'}</td><td><code>${JSON.stringify(p.schema)}</code></td><td>${p.description ?? ''}</td></tr>`,
    )}</table>`
  : ''}
${op.requestBody !== undefined ? html`<h4>Request body</h4><pre>${JSON.stringify(op.requestBody.content['application/json']?.schema, null, 2)}</pre>` : ''}
<h4>Responses</h4>
<table>${Object.entries(op.responses).map(
  ([status, r]) => html`<tr><td class="status">${status}</td><td>${r.description}${schemaOf(r) !== undefined ? html`<details><summary>schema</summary><pre>${JSON.stringify(schemaOf(r), null, 2)}</pre></details>` : ''}</td></tr>`,
)}</table>
</section>`,
  )}`,
)}
</body>
</html>`;
}

/** Sections of the docs page, most used first; tags not listed follow in name order. */
const tagOrder = ['node', 'mesh', 'requests', 'rank', 'lifecycle', 'demand', 'dashboard', 'docs', 'debug'];

interface Operation {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  security?: unknown;
  parameters?: { name: string; in: string; required: boolean; description?: string; schema: unknown }[];
  requestBody?: { content: Record<string, { schema?: unknown }> };
  responses: Record<string, { description: string; content?: Record<string, { schema?: unknown }> }>;
}

function schemaOf(r: Operation['responses'][string]): unknown {
  return Object.values(r.content ?? {})[0]?.schema;
}

const docsCss = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1d232a; }
h1 small { font-weight: normal; color: #667; font-size: 0.6em; }
nav a { margin-right: 0.8rem; }
h2 { border-bottom: 1px solid #ccd; margin-top: 2rem; text-transform: capitalize; }
.op { border: 1px solid #dde; border-radius: 6px; padding: 0.2rem 1rem 0.6rem; margin: 1rem 0; }
.method { display: inline-block; min-width: 3.8rem; text-align: center; color: #fff; border-radius: 4px; padding: 0 0.3rem; font-size: 0.8em; }
.get { background: #2f7d4f; } .post { background: #2a5fb0; } .put, .patch { background: #a36a00; } .delete { background: #b03030; }
.lock { font-size: 0.7em; background: #eee; border-radius: 4px; padding: 0 0.3rem; color: #555; vertical-align: middle; }
table { border-collapse: collapse; width: 100%; } td, th { border-top: 1px solid #eee; padding: 0.2rem 0.4rem; text-align: left; vertical-align: top; }
td.status { width: 4rem; font-weight: bold; }
pre { background: #f5f6f8; padding: 0.5rem; overflow-x: auto; font-size: 12px; }
.desc { color: #444; }
`;
