// `bun run ctl`: the operator's control of a mesh through any one node's HTTP API.
//
//   bun run ctl pause   [--node URL] [--token T | --token-file F] [--timeout MS]
//   bun run ctl unpause | suspend | resume | stop   (same options)
//   bun run ctl status  [--node URL]     lifecycle, view and this node's rank
//   bun run ctl lifecycle [--node URL]   the last transitions with their timings
//
// A command waits until the node reaches the command's target state. Exit codes: 0 done,
// 1 refused (409) or not reached in time (504), 2 bad usage or no answer from the node.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';

interface Options {
  node: string;
  token?: string;
  tokenFile?: string;
  dataDir: string;
  timeout?: number;
}

class CtlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

const program = new Command()
  .name('bun run ctl')
  .description('Control a rankmesh mesh through one node: lifecycle commands and status.')
  .option('--node <url>', 'HTTP address of any node of the mesh', process.env.RANKMESH_NODE ?? 'http://127.0.0.1:7070')
  .option('--token <token>', 'bearer token (default: $RANKMESH_TOKEN, else the token file)', process.env.RANKMESH_TOKEN)
  .option('--token-file <path>', 'file holding the bearer token (default: <data-dir>/token)')
  .option('--data-dir <dir>', "the node's data directory, where its token file is", process.env.RANKMESH_DATA_DIR ?? '.rankmesh/node')
  .option('--timeout <ms>', 'wait at most this long for the target state (default: the node\'s controlTimeoutMs)', parseMs)
  .showHelpAfterError();

for (const [name, what] of [
  ['pause', 'drain in-flight work on every rank, then hold (queued requests wait)'],
  ['unpause', 'run again (from PAUSING or PAUSED)'],
  ['suspend', 'offload engine memory on every rank (from PAUSED)'],
  ['resume', 'reload engine memory; the mesh returns to PAUSED (from SUSPENDED)'],
  ['stop', 'tear down and close the mesh; every node exits 0 (from PAUSED or SUSPENDED)'],
] as const) {
  program
    .command(name)
    .description(what)
    .action(async () => run(() => command(name, program.opts<Options>())));
}
program
  .command('status')
  .description("the mesh's lifecycle state, the view and this node's rank")
  .action(async () => run(() => status(program.opts<Options>())));
program
  .command('lifecycle')
  .description('the last lifecycle transitions seen by the node, with timings')
  .action(async () => run(() => lifecycle(program.opts<Options>())));

await program.parseAsync(process.argv);

async function command(name: string, opts: Options): Promise<void> {
  const token = tokenOf(opts);
  const started = performance.now();
  const body = opts.timeout === undefined ? {} : { timeoutMs: opts.timeout };
  const reply = await call(opts.node, `/v1/control/${name}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const data = reply.body as Record<string, unknown> & { error?: Record<string, unknown> };
  if (reply.status === 200) {
    const noop = data.noop === true ? ' (already there: nothing to do)' : '';
    console.log(`${name.toUpperCase()}: ${String(data.state)} in ${Math.round(performance.now() - started)} ms${noop}  [epoch ${String(data.epoch)}, version ${String(data.version)}, id ${String(data.id)}]`);
    return;
  }
  const error = data.error ?? {};
  if (reply.status === 409) {
    const allowed = (error.allowed as string[] | undefined) ?? [];
    throw new CtlError(`${name.toUpperCase()} refused: ${String(error.message)}\n  state now: ${String(error.state)}; allowed: ${allowed.length > 0 ? allowed.map((a) => a.toLowerCase()).join(', ') : 'none'}`, 1);
  }
  if (reply.status === 504) {
    throw new CtlError(`${name.toUpperCase()} not done in time: ${String(error.message)}\n  the command stays issued; watch it with: bun run ctl lifecycle --node ${opts.node}`, 1);
  }
  throw new CtlError(`${name.toUpperCase()} failed: HTTP ${reply.status} ${String(error.code ?? '')}: ${String(error.message ?? JSON.stringify(data))}`, reply.status === 401 ? 2 : 1);
}

async function status(opts: Options): Promise<void> {
  const [lc, view, rank] = await Promise.all([call(opts.node, '/v1/lifecycle'), call(opts.node, '/v1/view'), call(opts.node, '/v1/rank')]);
  const l = lc.body as { state?: string; generation?: number; epoch?: number; allowed?: string[] };
  console.log(`node       ${opts.node}`);
  console.log(`lifecycle  ${l.state ?? '?'} (generation ${l.generation ?? '?'}, epoch ${l.epoch ?? '?'}); allowed: ${(l.allowed ?? []).map((a) => a.toLowerCase()).join(', ') || 'none'}`);
  if (view.status === 200) {
    const v = view.body as { worldSize: number; mask: string; closed: boolean; ranks: { rank: number; peerId: string | null }[]; spares: { peerId: string; ready: boolean }[] };
    const active = v.ranks.filter((r) => r.peerId !== null).length;
    console.log(`view       ${active}/${v.worldSize} ranks active, mask 0x${v.mask}, ${v.spares.length} spare(s)${v.closed ? ', CLOSED' : ''}`);
    for (const r of v.ranks) console.log(`  rank ${String(r.rank).padStart(3)}  ${r.peerId ?? '(empty)'}`);
    for (const s of v.spares) console.log(`  spare     ${s.peerId}${s.ready ? '' : ' (warming up)'}`);
  } else {
    console.log(`view       none yet (${String((view.body as { error?: { message?: string } }).error?.message ?? view.status)})`);
  }
  if (rank.status === 200) {
    const r = rank.body as { rank: number | null; serving: boolean; queueLength: number; requests: Record<string, number> };
    console.log(`this node  rank ${r.rank ?? 'none'}, ${r.serving ? 'serving' : 'not serving'}, queue ${r.queueLength}, requests ${JSON.stringify(r.requests)}`);
  }
}

async function lifecycle(opts: Options): Promise<void> {
  const reply = await call(opts.node, '/v1/lifecycle');
  const l = reply.body as { state: string; transitions: { state: string; previous: string; epoch: number; via: string; atMs: number; previousMs: number | null }[]; pending: { kind: string; id: string }[] };
  console.log(`state ${l.state}${l.pending.length > 0 ? `; waiting to apply: ${l.pending.map((p) => `${p.kind} (${p.id})`).join(', ')}` : ''}`);
  for (const t of l.transitions) {
    const took = t.previousMs === null ? '' : `after ${t.previousMs} ms in ${t.previous}`;
    console.log(`  ${new Date(t.atMs).toISOString()}  ${t.state.padEnd(10)}  epoch ${String(t.epoch).padStart(3)}  ${t.via.padEnd(10)}  ${took}`);
  }
}

async function call(node: string, path: string, init?: RequestInit): Promise<{ status: number; body: unknown }> {
  let response: Response;
  try {
    response = await fetch(new URL(path, node), init);
  } catch (err) {
    throw new CtlError(`no answer from ${node}: ${(err as Error).message} (is the node running? --node sets the address)`, 2);
  }
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) as unknown };
  } catch {
    throw new CtlError(`${node}${path} answered HTTP ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`, 2);
  }
}

function tokenOf(opts: Options): string {
  if (opts.token !== undefined && opts.token !== '') return opts.token;
  const file = opts.tokenFile ?? join(opts.dataDir, 'token');
  if (!existsSync(file)) throw new CtlError(`no token: pass --token, set RANKMESH_TOKEN, or point --token-file/--data-dir at the node's token file (looked in ${file})`, 2);
  return readFileSync(file, 'utf8').trim();
}

function parseMs(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 600_000) throw new InvalidArgumentError('expected whole milliseconds, 1..600000');
  return n;
}

async function run(action: () => Promise<void>): Promise<void> {
  try {
    await action();
  } catch (err) {
    if (!(err instanceof CtlError)) throw err;
    console.error(err.message);
    process.exitCode = err.exitCode;
  }
}
