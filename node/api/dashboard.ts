// GET / and GET /dashboard: the live dashboard every node serves. The page is rendered here
// with the node's current snapshot embedded, so it shows the mesh before any script runs
// a request; node/dashboard/app.js then renders each snapshot pushed on /v1/events. The
// script and stylesheet are read once at start and served from memory; there is no
// front-end build and nothing is fetched from outside the node.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Context, Hono } from 'hono';
import { html, raw } from 'hono/html';
import { type EventSources, takeSnapshot } from './events.ts';
import { describeRoutes } from './openapi.ts';

const assetDir = join(import.meta.dir, '../dashboard');
const script = readFileSync(join(assetDir, 'app.js'), 'utf8');
const stylesheet = readFileSync(join(assetDir, 'app.css'), 'utf8');

export function dashboardRoutes(sources: Pick<EventSources, 'get' | 'totals'>): Hono {
  const page = async (c: Context) => c.html(dashboardPage(JSON.stringify(await takeSnapshot(sources))));
  const module = new Hono()
    .get('/', (c) => c.redirect('/dashboard'))
    .get('/dashboard', page)
    .get('/dashboard/app.js', (c) => c.body(script, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'no-cache' }))
    .get('/dashboard/app.css', (c) => c.body(stylesheet, 200, { 'Content-Type': 'text/css; charset=utf-8', 'Cache-Control': 'no-cache' }));
  return describeRoutes(module, [
    { method: 'get', path: '/', tag: 'dashboard', summary: 'Redirects to /dashboard', responses: { 302: { description: 'To /dashboard', contentType: 'text/html' } } },
    {
      method: 'get',
      path: '/dashboard',
      tag: 'dashboard',
      summary: 'The live dashboard: ranks, spares and joiners, lifecycle and its controls, pipelines, requests',
      responses: { 200: { description: 'HTML page', contentType: 'text/html' } },
    },
    { method: 'get', path: '/dashboard/app.js', tag: 'dashboard', summary: 'The dashboard\'s script', responses: { 200: { description: 'JavaScript', contentType: 'text/javascript' } } },
    { method: 'get', path: '/dashboard/app.css', tag: 'dashboard', summary: 'The dashboard\'s stylesheet', responses: { 200: { description: 'CSS', contentType: 'text/css' } } },
  ]);
}

function dashboardPage(snapshotJson: string): ReturnType<typeof html> {
  // `<` is escaped so no value inside the JSON can close the script element.
  const embedded = snapshotJson.replace(/</g, '\\u003c');
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rankmesh — dashboard</title>
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body>
<header>
<h1>rankmesh</h1>
<span id="node"></span>
<span id="live">connecting…</span>
<span id="updated"></span>
<a href="/docs">API</a>
<a href="/metrics">metrics</a>
</header>
<main>
<section class="wide"><h2>Ranks</h2><div id="view"><p class="muted">loading…</p></div></section>
<section><h2>Lifecycle</h2><div id="lifecycle"></div>
<div class="controls">
<button id="cmd-PAUSE" disabled>Pause</button>
<button id="cmd-UNPAUSE" disabled>Unpause</button>
<button id="cmd-SUSPEND" disabled>Suspend</button>
<button id="cmd-RESUME" disabled>Resume</button>
<button id="cmd-STOP" disabled>Stop</button>
<form id="token-form"><input id="token" type="password" placeholder="bearer token" autocomplete="off"><button type="submit">Set</button></form>
<span id="token-state"></span>
</div>
<p id="control-result"></p>
</section>
<section><h2>Spares and joiners</h2><div id="spares"></div></section>
<section><h2>Pipelines</h2><div id="pipelines"></div></section>
<section><h2>Requests</h2><div id="requests"></div></section>
</main>
<footer>Every node serves this page; commands issued here spread to the whole mesh. <noscript>Live updates and controls need JavaScript; the data below is as of the page load.</noscript></footer>
<script id="initial-snapshot" type="application/json">${raw(embedded)}</script>
<noscript><pre>${snapshotJson}</pre></noscript>
<script src="/dashboard/app.js"></script>
</body>
</html>`;
}
