// A private network of Linux network namespaces for real-process fault injection: one bridge,
// one namespace per host joined to it by a veth pair, addresses in a private /24 that no other
// run on this machine uses. Faults are what a real network does: a link taken down, blackhole
// routes (two-way cuts, or one-way when only one side has them; a send fails at once), silent
// cuts from nftables drops (a send times out), random loss from nftables
// (`numgen random mod 100 < P drop`) and a link that flaps. Everything is created by the lab
// and removed by it — on destroy(), on process exit, and by the stale clean-up of the next run
// (objects are named `rmx-<pid>-…`, so a run whose pid is gone is known to be dead). bun test
// runs no exit handlers, so tests destroy their lab in afterAll and rely on that clean-up
// after a crash.
//
// The root namespace holds the first address of the subnet on the bridge, so the harness can
// reach every host over HTTP. Faults between hosts never touch the harness's address, so a
// partitioned node can still be observed (only a downed link hides it).
import { readFileSync } from 'node:fs';

/** Why the lab cannot run here; undefined when it can. */
export function netnsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root';
  if (run(['ip', '-V']).code !== 0) return 'iproute2 (`ip`) is not installed';
  const probe = `rmx-${process.pid}-probe`;
  const added = run(['ip', 'netns', 'add', probe]);
  if (added.code !== 0) return `cannot create a network namespace: ${added.stderr.trim()}`;
  run(['ip', 'netns', 'del', probe]);
  return undefined;
}

/** Why random loss cannot be injected here (nft missing); undefined when it can. */
export function nftUnavailableReason(): string | undefined {
  return run(['nft', '--version']).code === 0 ? undefined : 'nftables (`nft`) is not installed: apt-get install -y nftables';
}

/** One host of the lab: a namespace with one address on the lab's bridge. */
export interface LabHost {
  readonly index: number;
  /** Namespace name, `rmx-<pid>-n<index>`. */
  readonly netns: string;
  /** The host's IPv4 address on the bridge. */
  readonly address: string;
  /** The veth end inside the namespace. */
  readonly innerLink: string;
}

export interface LabOptions {
  hosts: number;
}

/** Hosts per lab, at most: addresses .2 to .201 of the /24, names within 15 characters. */
export const labHostsMax = 200;

export class NetnsLab {
  readonly prefix = `rmx-${process.pid}-`;
  readonly bridge = `${this.prefix}br`;
  readonly hosts: LabHost[] = [];
  /** The harness's own address on the bridge (root namespace). */
  readonly harnessAddress: string;
  private destroyed = false;
  /** Blackhole routes in place, as `from>to` host indexes, so heal() can remove them. */
  private readonly blackholes = new Set<string>();
  private readonly lossy = new Set<number>();
  /** Silent one-way cuts: for each host, the hosts whose packets it drops on the way out. */
  private readonly silent = new Map<number, Set<number>>();
  private readonly downed = new Set<number>();
  private readonly onExit = (): void => this.destroy();

  private constructor(private readonly subnet: string) {
    this.harnessAddress = `${subnet}.1`;
  }

  /**
   * Removes what dead runs left behind, then builds the bridge and one namespace per host.
   * Throws (after removing what it built) when a command fails.
   */
  static create(options: LabOptions): NetnsLab {
    if (options.hosts < 1 || options.hosts > labHostsMax) throw new RangeError(`hosts must be 1..${labHostsMax}, got ${options.hosts}`);
    cleanupStaleLabs();
    const lab = new NetnsLab(freeSubnet());
    process.on('exit', lab.onExit);
    try {
      lab.build(options.hosts);
    } catch (err) {
      lab.destroy();
      throw err;
    }
    return lab;
  }

  /** The command line that runs `argv` inside host `index`'s namespace. */
  command(index: number, argv: readonly string[]): string[] {
    return ['ip', 'netns', 'exec', this.host(index).netns, ...argv];
  }

  /** Takes host `index`'s link down: it can reach nobody, not even the harness. */
  linkDown(index: number): void {
    must(['ip', '-n', this.host(index).netns, 'link', 'set', this.host(index).innerLink, 'down']);
    this.downed.add(index);
  }

  linkUp(index: number): void {
    const host = this.host(index);
    must(['ip', '-n', host.netns, 'link', 'set', host.innerLink, 'up']);
    // Taking a link down drops its connected route; bringing it up restores it with the address.
    this.downed.delete(index);
  }

  /** One-way cut: packets from host `from` to host `to` are dropped at `from`. */
  blockPath(from: number, to: number): void {
    const key = `${from}>${to}`;
    if (this.blackholes.has(key)) return;
    must(['ip', '-n', this.host(from).netns, 'route', 'add', 'blackhole', `${this.host(to).address}/32`]);
    this.blackholes.add(key);
  }

  unblockPath(from: number, to: number): void {
    const key = `${from}>${to}`;
    if (!this.blackholes.has(key)) return;
    must(['ip', '-n', this.host(from).netns, 'route', 'del', 'blackhole', `${this.host(to).address}/32`]);
    this.blackholes.delete(key);
  }

  /**
   * One-way cut that fails silently: packets from `from` to `to` are dropped by nftables, so
   * connections time out instead of failing at once as they do on a blackhole route (EINVAL).
   */
  dropPath(from: number, to: number): void {
    const targets = this.silent.get(from) ?? new Set<number>();
    if (targets.has(to)) return;
    targets.add(to);
    this.silent.set(from, targets);
    this.writeSilentCuts(from);
  }

  /**
   * Two-way cut between every host of `a` and every host of `b`: blackhole routes (a send
   * fails at once) or, with `silent`, dropped packets (a send times out).
   */
  split(a: readonly number[], b: readonly number[], options: { silent?: boolean } = {}): void {
    const cut = (from: number, to: number): void => (options.silent === true ? this.dropPath(from, to) : this.blockPath(from, to));
    for (const x of a) {
      for (const y of b) {
        cut(x, y);
        cut(y, x);
      }
    }
  }

  /**
   * Drops `percent` % of the packets host `index` sends to other hosts (one-way loss; traffic to
   * the harness is spared so the host stays observable). Replaces an earlier loss rule.
   */
  setLoss(index: number, percent: number): void {
    if (!(percent >= 0 && percent <= 100)) throw new RangeError(`loss percent must be 0..100, got ${percent}`);
    this.clearLoss(index);
    if (percent === 0) return;
    // numgen takes values 0..99, so a total loss is a plain drop.
    const chance = percent >= 100 ? '' : `numgen random mod 100 < ${Math.round(percent)} counter `;
    const script = [
      'table inet rmx_loss {',
      '  chain out {',
      '    type filter hook output priority 0; policy accept;',
      `    ip daddr != ${this.harnessAddress} ip daddr ${this.subnet}.0/24 ${chance}drop`,
      '  }',
      '}',
    ].join('\n');
    must(this.command(index, ['nft', '-f', '-']), script);
    this.lossy.add(index);
  }

  clearLoss(index: number): void {
    if (!this.lossy.has(index)) return;
    must(this.command(index, ['nft', 'delete', 'table', 'inet', 'rmx_loss']));
    this.lossy.delete(index);
  }

  /**
   * Takes host `index`'s link down and up `cycles` times, `downMs` down and `upMs` up each time;
   * resolves with the link up. an aborted `signal` ends it early (bounded either way).
   */
  async flap(index: number, options: { cycles: number; downMs: number; upMs: number; signal?: AbortSignal }): Promise<number> {
    let done = 0;
    for (; done < options.cycles && options.signal?.aborted !== true; done++) {
      this.linkDown(index);
      await Bun.sleep(options.downMs);
      this.linkUp(index);
      if (done + 1 < options.cycles) await Bun.sleep(options.upMs);
    }
    return done;
  }

  /** Removes every fault: blackhole routes, loss rules, downed links. */
  heal(): void {
    for (const key of [...this.blackholes]) {
      const [from, to] = key.split('>').map(Number) as [number, number];
      this.unblockPath(from, to);
    }
    for (const index of [...this.lossy]) this.clearLoss(index);
    for (const index of [...this.downed]) this.linkUp(index);
    for (const index of [...this.silent.keys()]) {
      this.silent.delete(index);
      this.writeSilentCuts(index);
    }
  }

  /** Faults in place now, for logs and reports. */
  faults(): { blackholes: string[]; silent: string[]; lossy: number[]; downed: number[] } {
    const silent = [...this.silent].flatMap(([from, to]) => [...to].map((t) => `${from}>${t}`));
    return { blackholes: [...this.blackholes], silent, lossy: [...this.lossy], downed: [...this.downed] };
  }

  /** Removes the namespaces (ending whatever still runs in them) and the bridge. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    removeLab(this.prefix);
  }

  /** Rewrites host `index`'s table of silent cuts from `silent` (removing it when empty). */
  private writeSilentCuts(index: number): void {
    const targets = [...(this.silent.get(index) ?? [])].map((t) => this.host(t).address);
    // Declaring the table first makes the delete valid whether or not it existed.
    const lines = ['table inet rmx_cut', 'delete table inet rmx_cut'];
    if (targets.length > 0) {
      lines.push(
        'table inet rmx_cut {',
        '  chain out {',
        '    type filter hook output priority 0; policy accept;',
        `    ip daddr { ${targets.join(', ')} } drop`,
        '  }',
        '}',
      );
    }
    must(this.command(index, ['nft', '-f', '-']), lines.join('\n'));
  }

  private host(index: number): LabHost {
    const host = this.hosts[index];
    if (host === undefined) throw new RangeError(`no host ${index} in this lab (it has ${this.hosts.length})`);
    return host;
  }

  private build(count: number): void {
    must(['ip', 'link', 'add', this.bridge, 'type', 'bridge']);
    must(['ip', 'addr', 'add', `${this.harnessAddress}/24`, 'dev', this.bridge]);
    must(['ip', 'link', 'set', this.bridge, 'up']);
    for (let index = 0; index < count; index++) {
      const netns = `${this.prefix}n${index}`;
      const innerLink = `${this.prefix}i${index}`;
      const outerLink = `${this.prefix}o${index}`;
      const address = `${this.subnet}.${index + 2}`;
      must(['ip', 'netns', 'add', netns]);
      must(['ip', 'link', 'add', innerLink, 'type', 'veth', 'peer', 'name', outerLink]);
      must(['ip', 'link', 'set', innerLink, 'netns', netns]);
      must(['ip', 'link', 'set', outerLink, 'master', this.bridge, 'up']);
      must(['ip', '-n', netns, 'addr', 'add', `${address}/24`, 'dev', innerLink]);
      must(['ip', '-n', netns, 'link', 'set', innerLink, 'up']);
      must(['ip', '-n', netns, 'link', 'set', 'lo', 'up']);
      this.hosts.push({ index, netns, address, innerLink });
    }
  }
}

/**
 * Removes namespaces and links named `rmx-<pid>-…` whose pid no longer runs (a crashed or
 * killed run). Returns what it removed. Objects of live runs are left alone.
 */
export function cleanupStaleLabs(): string[] {
  const removed: string[] = [];
  const prefixes = new Set<string>();
  for (const name of listNetns()) {
    const pid = ownerPid(name);
    if (pid !== undefined && !alive(pid)) prefixes.add(`rmx-${pid}-`);
  }
  for (const name of listLinks()) {
    const pid = ownerPid(name);
    if (pid !== undefined && !alive(pid)) prefixes.add(`rmx-${pid}-`);
  }
  for (const prefix of prefixes) removed.push(...removeLab(prefix));
  return removed;
}

function removeLab(prefix: string): string[] {
  const removed: string[] = [];
  for (const name of listNetns().filter((n) => n.startsWith(prefix))) {
    // Processes still inside are ended first: a namespace with live sockets would linger.
    for (const pid of run(['ip', 'netns', 'pids', name]).stdout.split('\n').map(Number).filter((p) => p > 0)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    run(['ip', 'netns', 'del', name]);
    removed.push(name);
  }
  for (const name of listLinks().filter((n) => n.startsWith(prefix))) {
    run(['ip', 'link', 'del', name]);
    removed.push(name);
  }
  return removed;
}

/** A /24 in 10.77.0.0/16 that no interface of the root namespace uses yet. */
function freeSubnet(): string {
  const used = run(['ip', '-4', '-o', 'addr']).stdout;
  const start = process.pid % 250;
  for (let i = 0; i < 250; i++) {
    const third = (start + i) % 250;
    if (!used.includes(` 10.77.${third}.`)) return `10.77.${third}`;
  }
  throw new Error('no free /24 in 10.77.0.0/16 for a lab');
}

function listNetns(): string[] {
  return run(['ip', 'netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith('rmx-'));
}

function listLinks(): string[] {
  return run(['ip', '-o', 'link', 'show']).stdout
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => n.startsWith('rmx-'));
}

function ownerPid(name: string): number | undefined {
  const match = /^rmx-(\d+)-/.exec(name);
  return match === null ? undefined : Number(match[1]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A recycled pid may now belong to something else; a bun process is what runs labs.
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim().startsWith('bun');
  } catch {
    return false;
  }
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(argv: readonly string[], stdin?: string): RunResult {
  try {
    const result = Bun.spawnSync([...argv], { stdin: stdin === undefined ? 'ignore' : new TextEncoder().encode(stdin), stdout: 'pipe', stderr: 'pipe' });
    return { code: result.exitCode ?? 1, stdout: result.stdout.toString(), stderr: result.stderr.toString() };
  } catch (err) {
    return { code: 127, stdout: '', stderr: (err as Error).message };
  }
}

function must(argv: readonly string[], stdin?: string): void {
  const result = run(argv, stdin);
  if (result.code !== 0) throw new Error(`${argv.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
}
