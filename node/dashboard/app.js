// The rankmesh dashboard's script: renders each snapshot (first the one embedded in the page,
// then every one the node pushes on /v1/events) into the panels, and sends lifecycle commands
// with the bearer token the operator entered (kept in sessionStorage for this tab only).
// Plain browser JavaScript, no build step and no dependencies.
'use strict';

const tokenKey = 'rankmesh-token';
const commands = ['PAUSE', 'UNPAUSE', 'SUSPEND', 'RESUME', 'STOP'];
let previous = null;
let latest = null;
const rates = {};

function $(id) {
  return document.getElementById(id);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('data-')) node.setAttribute(k, String(v));
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function short(id) {
  return id ? `${id.slice(0, 6)}…${id.slice(-4)}` : '—';
}

function seconds(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function unavailable(container, panel, what) {
  const why = panel.status === 404 ? `${what}: not available on this node` : `${what}: ${panel.reason}`;
  container.replaceChildren(el('p', { class: 'na', 'data-unavailable': panel.status, text: why }));
}

function renderHeader(snap) {
  const status = snap.panels.status;
  if (!status.ok) return;
  const s = status.body;
  $('node').textContent = `${s.meshId} · node ${short(s.peerId)} · v${s.version} · up ${seconds(s.uptimeMs)} · ${s.connectedPeers.length} peers`;
  document.title = `rankmesh ${s.meshId} — dashboard`;
}

function rankState(rank, members, self) {
  if (rank.peerId === null) return 'empty';
  if (!rank.active) return 'inactive';
  const m = members.find((x) => x.peerId === rank.peerId && x.bootId === rank.bootId);
  if (m && m.liveness !== 'alive') return m.liveness;
  if (self && rank.peerId === self.peerId && self.rank && self.rank.body && !self.rank.body.serving) return 'starting';
  return 'active';
}

function renderView(snap) {
  const box = $('view');
  const view = snap.panels.view;
  if (!view.ok) return unavailable(box, view, 'the view');
  const v = view.body;
  const members = snap.panels.members.ok ? snap.panels.members.body.members : [];
  const me = snap.panels.status.ok ? snap.panels.status.body : null;
  const self = me ? { peerId: me.peerId, rank: snap.panels.rank } : null;
  const facts = el(
    'dl',
    { class: 'facts' },
    el('dt', { text: 'generation' }), el('dd', { id: 'generation', text: v.generation }),
    el('dt', { text: 'epoch' }), el('dd', { id: 'epoch', text: v.epoch }),
    el('dt', { text: 'mask' }), el('dd', { id: 'mask', text: `0x${v.mask}` }),
    el('dt', { text: 'world' }), el('dd', { text: `${v.ranks.filter((r) => r.active).length} / ${v.worldSize} active` }),
    v.closed ? el('dd', { class: 'closed', text: 'closed' }) : null,
  );
  const grid = el(
    'div',
    { id: 'grid', class: 'grid' },
    v.ranks.map((r) => {
      const state = rankState(r, members, self);
      const mine = me && r.peerId === me.peerId;
      return el(
        'div',
        { class: `cell ${state}${mine ? ' mine' : ''}`, 'data-rank': r.rank, 'data-state': state, 'data-peer': r.peerId ?? '', 'data-active': r.active, title: r.peerId ?? 'empty' },
        el('span', { class: 'rank', text: r.rank }),
        el('span', { class: 'peer', text: short(r.peerId) }),
        el('span', { class: 'state', text: mine ? `${state} · this node` : state }),
      );
    }),
  );
  box.replaceChildren(facts, grid);
}

function renderSpares(snap) {
  const box = $('spares');
  const view = snap.panels.view;
  if (!view.ok) return unavailable(box, view, 'the view');
  const members = snap.panels.members.ok ? snap.panels.members.body.members : [];
  const rows = view.body.spares.map((s) => ({ peerId: s.peerId, role: 'spare', ready: s.ready }));
  // Joiners: peers of this mesh that hold no rank and are not spares of the view (a restarted
  // host warming up alone, or one waiting for the view change that admits it).
  for (const m of members) {
    if (m.rank >= 0 || rows.some((r) => r.peerId === m.peerId)) continue;
    if (m.role === 'spare' || m.role === 'outsider' || m.role === 'forming') rows.push({ peerId: m.peerId, role: m.role === 'spare' ? 'spare' : 'joiner', ready: m.ready });
  }
  const me = snap.panels.status.ok ? snap.panels.status.body : null;
  const rank = snap.panels.rank.ok ? snap.panels.rank.body : null;
  if (me && rank && rank.rank === null && !rows.some((r) => r.peerId === me.peerId)) {
    rows.push({ peerId: me.peerId, role: rank.phase ?? 'this node', ready: rank.warmUp.fraction >= 1 });
  }
  if (rows.length === 0) return box.replaceChildren(el('p', { class: 'muted', text: 'no spares or joiners' }));
  box.replaceChildren(
    el(
      'table',
      {},
      el('tr', {}, el('th', { text: 'peer' }), el('th', { text: 'role' }), el('th', { text: 'warm-up' })),
      rows.map((r) => {
        const self = me && r.peerId === me.peerId && rank;
        const fraction = self ? rank.warmUp.fraction : r.ready ? 1 : null;
        const label = self ? `${rank.phase ?? rank.warmUp.phase} ${Math.round(rank.warmUp.fraction * 100)}%` : r.ready ? 'ready' : 'warming up';
        return el(
          'tr',
          { 'data-spare': r.peerId },
          el('td', { text: short(r.peerId) }),
          el('td', { text: r.role }),
          el('td', {}, fraction === null ? label : el('div', { class: 'bar', title: label }, el('div', { style: `width:${Math.round(fraction * 100)}%` }), el('span', { text: label }))),
        );
      }),
    ),
  );
}

function renderLifecycle(snap) {
  const box = $('lifecycle');
  const panel = snap.panels.lifecycle;
  updateButtons(panel);
  if (!panel.ok) return unavailable(box, panel, 'lifecycle control');
  const l = panel.body;
  const transitions = (l.transitions || []).slice(-8).reverse();
  box.replaceChildren(
    el('p', {}, el('span', { id: 'lifecycle-state', class: `badge ${l.state}`, 'data-state': l.state, text: l.state }), ` version ${l.version} · epoch ${l.epoch}`, l.transient ? ' · in transition' : ''),
    transitions.length === 0
      ? el('p', { class: 'muted', text: 'no transitions yet' })
      : el(
          'table',
          { id: 'transitions' },
          el('tr', {}, el('th', { text: 'at' }), el('th', { text: 'transition' }), el('th', { text: 'time in previous state' }), el('th', { text: 'via' })),
          transitions.map((t) =>
            el(
              'tr',
              {},
              el('td', { text: new Date(t.atMs).toLocaleTimeString() }),
              el('td', { text: `${t.previous} → ${t.state}` }),
              el('td', { text: seconds(t.previousMs) }),
              el('td', { text: typeof t.via === 'string' ? t.via : JSON.stringify(t.via) }),
            ),
          ),
        ),
  );
}

function updateButtons(panel) {
  const allowed = panel.ok ? panel.body.allowed || [] : [];
  for (const command of commands) {
    const button = $(`cmd-${command}`);
    button.disabled = !panel.ok || !allowed.includes(command);
    button.title = panel.ok ? (allowed.includes(command) ? `${command} the mesh` : `not allowed while ${panel.body.state}`) : 'lifecycle control is not available on this node';
  }
}

function renderPipelines(snap) {
  const box = $('pipelines');
  const panel = snap.panels.pipelines;
  if (!panel.ok) return unavailable(box, panel, 'pipeline demand');
  const body = panel.body;
  const list = Array.isArray(body) ? body : body.pipelines || [];
  const round = body.round ? `plan round ${body.round.seq} of epoch ${body.round.epoch}` : 'no plan round yet';
  if (list.length === 0) return box.replaceChildren(el('p', { class: 'muted', text: `no pipelines with demand · ${round}` }));
  box.replaceChildren(
    el('p', { class: 'muted', text: round }),
    el(
      'table',
      { id: 'pipeline-table' },
      el('tr', {}, el('th', { text: 'pipeline' }), el('th', { text: 'ranks' }), el('th', { text: 'demand' }), el('th', { text: 'progress' })),
      list.map((p) => {
        const records = p.records || [];
        const open = records.filter((r) => !r.closed);
        const steps = records.reduce((s, r) => s + r.steps, 0);
        const done = records.reduce((s, r) => s + r.done, 0);
        const fraction = steps === 0 ? 0 : done / steps;
        return el(
          'tr',
          { 'data-pipeline': p.name },
          el('td', { text: p.name }),
          el('td', { text: p.ranks && p.ranks.length > 0 ? p.ranks.join(', ') : 'none' }),
          el('td', { text: `${p.remaining} steps left · ${open.length} open record${open.length === 1 ? '' : 's'}${p.priority ? ` · priority ${p.priority}` : ''}` }),
          el('td', {}, el('div', { class: 'bar', title: `${done} of ${steps} steps` }, el('div', { style: `width:${Math.round(fraction * 100)}%` }), el('span', { text: `${done} / ${steps}` }))),
        );
      }),
    ),
  );
}

function rate(name, value, atMs) {
  const before = rates[name];
  rates[name] = { value, atMs };
  if (!before || atMs <= before.atMs) return null;
  return Math.max(0, (value - before.value) / ((atMs - before.atMs) / 1000));
}

function renderRequests(snap) {
  const box = $('requests');
  const rank = snap.panels.rank;
  const rows = [];
  if (rank.ok) {
    const r = rank.body;
    rows.push(['rank', r.rank === null ? 'none' : `${r.rank}${r.serving ? ' (serving)' : ' (not serving)'}`]);
    rows.push(['queue', r.queueLength]);
    for (const k of ['accepted', 'completed', 'failed', 'timedOut']) {
      const per = rate(`rank.${k}`, r.requests[k], snap.atMs);
      rows.push([k, `${r.requests[k]}${per === null ? '' : ` · ${per.toFixed(1)}/s`}`]);
    }
    if (r.lastError) rows.push(['last error', r.lastError]);
  }
  for (const [name, value] of Object.entries(snap.totals || {})) {
    const per = rate(name, value, snap.atMs);
    rows.push([name, `${value}${per === null ? '' : ` · ${per.toFixed(1)}/s`}`]);
  }
  if (rows.length === 0) return unavailable(box, rank, 'requests');
  box.replaceChildren(el('table', { id: 'request-table' }, rows.map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', { 'data-counter': k, text: v })))));
}

function render(snap) {
  latest = snap;
  for (const f of [renderHeader, renderView, renderSpares, renderLifecycle, renderPipelines, renderRequests]) {
    try {
      f(snap);
    } catch (err) {
      console.error(err);
    }
  }
  $('updated').textContent = `updated ${new Date(snap.atMs).toLocaleTimeString()}`;
  previous = snap;
}

async function send(command) {
  // STOP closes the mesh for good (a new generation needs --new-generation): ask first.
  if (command === 'STOP' && !window.confirm('STOP closes the mesh: every node tears down and exits. Continue?')) return;
  const token = sessionStorage.getItem(tokenKey) || window.prompt('Bearer token of this node (kept for this tab only):') || '';
  if (token === '') return;
  sessionStorage.setItem(tokenKey, token);
  $('token-state').textContent = 'token set';
  const out = $('control-result');
  out.textContent = `${command} sent…`;
  out.className = 'pending';
  try {
    const response = await fetch(`/v1/control/${command.toLowerCase()}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) sessionStorage.removeItem(tokenKey);
    if (response.ok) {
      out.textContent = `${command}: ${body.state}${body.noop ? ' (already there)' : ''} in ${seconds(body.tookMs)}`;
      out.className = 'ok';
    } else {
      out.textContent = `${command}: ${response.status} ${body.error ? body.error.message : ''}`;
      out.className = 'bad';
    }
  } catch (err) {
    out.textContent = `${command}: ${err.message}`;
    out.className = 'bad';
  }
}

function connect() {
  const live = $('live');
  const source = new EventSource('/v1/events');
  source.addEventListener('open', () => {
    live.textContent = 'live';
    live.className = 'live';
  });
  source.addEventListener('snapshot', (e) => render(JSON.parse(e.data)));
  source.addEventListener('error', () => {
    live.textContent = 'reconnecting…';
    live.className = 'down';
  });
}

function start() {
  for (const command of commands) $(`cmd-${command}`).addEventListener('click', () => void send(command));
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = $('token').value.trim();
    if (value === '') sessionStorage.removeItem(tokenKey);
    else sessionStorage.setItem(tokenKey, value);
    $('token').value = '';
    $('token-state').textContent = value === '' ? 'no token' : 'token set';
  });
  $('token-state').textContent = sessionStorage.getItem(tokenKey) ? 'token set' : 'no token';
  const initial = $('initial-snapshot');
  if (initial && initial.textContent) render(JSON.parse(initial.textContent));
  connect();
}

window.rankmeshDashboard = { latest: () => latest, previous: () => previous };
start();
