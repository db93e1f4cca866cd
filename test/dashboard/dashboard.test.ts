// Covers the dashboard in a real browser (headless Chromium driven by playwright-core) against
// a running mesh of 3 ranks and a hot spare: the ranks grid matches /v1/view, the spare is
// listed, live updates arrive over server-sent events, PAUSE and UNPAUSE clicked with the
// token change the whole mesh's state, pipelines show their demand, and a screenshot is saved.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

// Functions handed to page.waitForFunction run in the browser; this is the little of the DOM
// they touch (the project's TypeScript has no DOM library).
interface PageNode {
  readonly textContent: string | null;
  readonly children: ArrayLike<PageNode>;
}
declare const document: { getElementById(id: string): PageNode | null; querySelector(selector: string): PageNode | null };

const chromiumPath = '/usr/bin/chromium';
const hasChromium = existsSync(chromiumPath);
if (!hasChromium) console.log(`test/dashboard skipped: ${chromiumPath} is absent (apt-get install chromium; .ci/run installs it where apt is available)`);

const token = 'inproc-test-token';
let mesh: InprocMesh;
let node: InprocNode;
let other: InprocNode;
let browser: Browser;
let page: Page;
const shotDir = mkdtempSync(join(tmpdir(), 'rankmesh-dashboard-'));

beforeAll(async () => {
  if (!hasChromium) return;
  // Three ranks and a hot spare; the page is opened on a node that holds a rank.
  mesh = await InprocMesh.start({ nodes: 4, worldSize: 3 });
  await waitFor('3 ranks serving and a ready spare', () => {
    const view = mesh.nodes[0]!.runtime.driver.core.summary();
    const ranked = mesh.nodes.filter((n) => n.runtime.rank.rankStatus().rank !== null);
    return view !== null && view.spares.some((s) => s.ready) && ranked.length === 3 && ranked.every((n) => n.runtime.rank.rankStatus().serving);
  }, 20_000);
  node = mesh.nodes.find((n) => n.runtime.rank.rankStatus().rank !== null)!;
  other = mesh.nodes.find((n) => n !== node && n.runtime.rank.rankStatus().rank !== null)!;
  const { chromium } = await import('playwright-core');
  // Root in a container has no user namespace for Chromium's sandbox.
  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await mesh?.stop();
  rmSync(shotDir, { recursive: true, force: true });
});

describe.skipIf(!hasChromium)('dashboard in Chromium', () => {
  test('the ranks grid shows the committed view: ranks, peers, epoch, generation and mask', async () => {
    await page.goto(`${node.httpUrl}/`);
    expect(page.url()).toEndWith('/dashboard');
    const view = (await (await fetch(`${node.httpUrl}/v1/view`)).json()) as {
      generation: number;
      epoch: number;
      mask: string;
      ranks: { rank: number; peerId: string | null; active: boolean }[];
    };
    await page.waitForSelector('#grid .cell');
    const cells = await page.$$eval('#grid .cell', (els) =>
      els.map((e) => ({ rank: Number(e.getAttribute('data-rank')), peer: e.getAttribute('data-peer'), active: e.getAttribute('data-active'), state: e.getAttribute('data-state') })),
    );
    expect(cells.map((c) => c.rank)).toEqual(view.ranks.map((r) => r.rank));
    expect(cells.map((c) => c.peer)).toEqual(view.ranks.map((r) => r.peerId ?? ''));
    expect(cells.map((c) => c.active)).toEqual(view.ranks.map((r) => String(r.active)));
    expect(cells.every((c) => c.state === 'active')).toBe(true);
    expect(await page.textContent('#epoch')).toBe(String(view.epoch));
    expect(await page.textContent('#generation')).toBe(String(view.generation));
    expect(await page.textContent('#mask')).toBe(`0x${view.mask}`);
  });

  test('the spare is listed as ready', async () => {
    const spare = node.runtime.driver.core.summary()!.spares[0]!;
    const row = `#spares tr[data-spare="${spare.peerId}"]`;
    await page.waitForSelector(row);
    expect(await page.textContent(`${row} td:nth-child(2)`)).toBe('spare');
    expect(await page.textContent(`${row} td:nth-child(3)`)).toContain('ready');
  });

  test('updates arrive live over server-sent events', async () => {
    await page.waitForFunction(() => document.getElementById('live')?.textContent === 'live', undefined, { timeout: 10_000 });
    const before = await page.textContent('[data-counter="completed"]');
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${node.httpUrl}/v1/rank/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ input: [4, 5, 6] }),
      });
      expect(r.status).toBe(200);
    }
    const completed = node.runtime.rank.rankStatus().requests.completed;
    await page.waitForFunction((n) => (document.querySelector('[data-counter="completed"]')?.textContent ?? '').startsWith(String(n)), completed, { timeout: 10_000 });
    expect(await page.textContent('[data-counter="completed"]')).not.toBe(before);
  });

  test('PAUSE clicked with the token pauses the mesh, UNPAUSE resumes it', async () => {
    expect(await page.isDisabled('#cmd-PAUSE')).toBe(false);
    expect(await page.isDisabled('#cmd-UNPAUSE')).toBe(true);
    await page.fill('#token', token);
    await page.click('#token-form button[type=submit]');
    expect(await page.textContent('#token-state')).toBe('token set');

    await page.click('#cmd-PAUSE');
    await page.waitForSelector('#lifecycle-state[data-state="PAUSED"]', { timeout: 15_000 });
    await page.waitForFunction(() => (document.getElementById('control-result')?.textContent ?? '').startsWith('PAUSE: PAUSED'), undefined, { timeout: 15_000 });
    // The command spread: another node agrees.
    await waitFor('another rank PAUSED', () => other.runtime.driver.core.lifecycleState() === 'PAUSED', 10_000);
    expect(await page.isDisabled('#cmd-UNPAUSE')).toBe(false);
    expect(await page.isDisabled('#cmd-RESUME')).toBe(true);
    expect(await page.$$eval('#transitions tr', (rows) => rows.map((r) => r.textContent ?? '').join('\n'))).toContain('PAUSING → PAUSED');
    await page.screenshot({ path: join(shotDir, 'dashboard-paused.png'), fullPage: true });

    await page.click('#cmd-UNPAUSE');
    await page.waitForSelector('#lifecycle-state[data-state="RUNNING"]', { timeout: 15_000 });
    await waitFor('another rank RUNNING', () => other.runtime.driver.core.lifecycleState() === 'RUNNING', 10_000);
  }, 40_000);

  test('pipelines show their demand and assigned ranks (or say the node lacks the route); a screenshot is saved', async () => {
    const pipelines = await fetch(`${node.httpUrl}/v1/pipelines`);
    if (pipelines.status === 404) {
      expect(await page.textContent('#pipelines [data-unavailable="404"]')).toContain('not available');
    } else {
      expect(pipelines.status).toBe(200);
      const opened = await fetch(`${node.httpUrl}/v1/pipelines/default/demand`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ steps: 100, timeoutMs: 15_000 }),
      });
      expect(opened.status).toBe(201);
      const { ranks } = (await opened.json()) as { ranks: number[] };
      const row = '#pipelines tr[data-pipeline="default"]';
      await page.waitForSelector(row, { timeout: 10_000 });
      await page.waitForFunction((sel) => !(document.querySelector(sel)?.children[1]?.textContent ?? 'none').startsWith('none'), row, { timeout: 10_000 });
      const shown = (await page.textContent(`${row} td:nth-child(2)`)) ?? '';
      for (const r of ranks) expect(shown.split(', ')).toContain(String(r));
      expect(await page.textContent(`${row} td:nth-child(3)`)).toContain('100 steps left');
    }
    const shot = join(shotDir, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    // RANKMESH_DASHBOARD_SCREENSHOT=docs/dashboard.png refreshes the README's picture.
    const keep = process.env.RANKMESH_DASHBOARD_SCREENSHOT;
    if (keep !== undefined && keep !== '') copyFileSync(shot, resolve(keep));
  });
});
