// Covers the OpenAPI document of a real node: every registered route is described (and only
// those), described responses match what the routes really answer, request bodies are the
// schemas that validate them, and /docs renders every operation.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { Hono } from 'hono';
import { z } from 'zod';
import { inferBodySchema } from '../../node/api/rank.ts';
import { describeRoutes, openApiDocument, routeDocsOf, undocumentedRoutes, type RouteDoc } from '../../node/api/openapi.ts';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

let mesh: InprocMesh;
let node: InprocNode;
let docs: readonly RouteDoc[];

beforeAll(async () => {
  mesh = await InprocMesh.start({ nodes: 1 });
  node = mesh.nodes[0]!;
  await waitFor('the rank serving', () => node.runtime.rank.rankStatus().serving, 20_000);
  docs = routeDocsOf(node.runtime.app);
}, 30_000);

afterAll(async () => {
  await mesh?.stop();
});

describe('OpenAPI', () => {
  test('every route the running node registered is described, and every description is of a registered route', async () => {
    expect(docs.length).toBeGreaterThan(10);
    expect(undocumentedRoutes(node.runtime.app, docs)).toEqual([]);
    const registered = new Set(
      (await import('hono/dev')).inspectRoutes(node.runtime.app)
        .filter((r) => !r.isMiddleware && r.method !== 'ALL')
        .map((r) => `${r.method} ${r.path}`),
    );
    const stale = docs.map((d) => `${d.method.toUpperCase()} ${d.path}`).filter((k) => !registered.has(k));
    expect(stale).toEqual([]);
  });

  test('the check catches a route without a description', () => {
    const module = describeRoutes(new Hono().get('/v1/a', (c) => c.text('a')), [
      { method: 'get', path: '/v1/a', tag: 't', summary: 'a', responses: { 200: { description: 'a' } } },
    ]);
    const app = new Hono().route('/', module).post('/v1/b', (c) => c.text('b'));
    expect(undocumentedRoutes(app, routeDocsOf(module))).toEqual(['POST /v1/b']);
  });

  test('/openapi.json is OpenAPI 3.1 with one operation per route; mutating routes need the bearer token', async () => {
    const response = await fetch(`${node.httpUrl}/openapi.json`);
    expect(response.status).toBe(200);
    const doc = (await response.json()) as { openapi: string; paths: Record<string, Record<string, { security?: unknown; operationId: string }>> };
    expect(doc.openapi).toBe('3.1.0');
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })));
    expect(operations.length).toBe(docs.length);
    expect(Object.keys(doc.paths)).toContain('/v1/control/{command}');
    for (const { method, op } of operations) expect(op.security !== undefined).toBe(method !== 'get');
    expect(new Set(operations.map((o) => o.op.operationId)).size).toBe(operations.length);
  });

  test('a request body in the document is the zod schema that validates it', async () => {
    const doc = openApiDocument(docs, { title: 't', version: '0' }) as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: unknown }> } }>> };
    const documented = doc.paths['/v1/rank/infer']?.post?.requestBody?.content['application/json']?.schema;
    const { $schema: _, ...expected } = z.toJSONSchema(inferBodySchema, { io: 'input' }) as Record<string, unknown>;
    expect(documented).toEqual(expected);
    // What the schema refuses, the route refuses.
    const bad = { input: [1, 2], extra: true };
    expect(inferBodySchema.safeParse(bad).success).toBe(false);
    const response = await fetch(`${node.httpUrl}/v1/rank/infer`, {
      method: 'POST',
      headers: { authorization: 'Bearer inproc-test-token', 'content-type': 'application/json' },
      body: JSON.stringify(bad),
    });
    expect(response.status).toBe(400);
  });

  test('every GET route with a described JSON body answers in that shape', async () => {
    const checked: string[] = [];
    for (const doc of docs) {
      const ok = doc.responses[200];
      if (doc.method !== 'get' || doc.params !== undefined || ok?.schema === undefined || (ok.contentType ?? 'application/json') !== 'application/json') continue;
      const response = await fetch(`${node.httpUrl}${doc.path}`);
      expect(response.status).toBe(200);
      const parsed = ok.schema.safeParse(await response.json());
      if (!parsed.success) throw new Error(`${doc.path}: ${parsed.error.message}`);
      checked.push(doc.path);
    }
    expect(checked).toEqual(expect.arrayContaining(['/healthz', '/v1/status', '/v1/view', '/v1/members', '/v1/rank', '/v1/lifecycle', '/v1/dashboard/snapshot']));
  });

  test('/docs renders every operation as HTML without external resources', async () => {
    const response = await fetch(`${node.httpUrl}/docs`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/html');
    const page = await response.text();
    for (const doc of docs) expect(page).toContain(`<code>${doc.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}</code>`);
    expect(page).not.toMatch(/(src|href)="https?:/);
  });
});
