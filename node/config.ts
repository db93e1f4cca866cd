// Node configuration: one zod schema is the source of truth for every setting. Its entries
// drive flag parsing, the RANKMESH_<SETTING> environment form, the optional JSON config
// file, `--help`, the README reference table and the validation errors. Adding a setting
// is one line in `settings` below.
import { Command, CommanderError, Option } from 'commander';
import { multiaddr } from '@multiformats/multiaddr';
import { readFileSync } from 'node:fs';
import { z } from 'zod';

/** Where a value came from; named in every validation error. */
export type SettingSource = 'default' | 'config file' | 'environment' | 'flag';

/** A bad setting, a bad config file or a bad flag: the message names what and why. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    /** The setting at fault, or '' when the fault is not one setting (e.g. an unreadable file). */
    readonly setting: string,
    readonly reason: string,
    readonly source?: string,
  ) {
    super(setting === '' ? reason : `setting ${setting}${source === undefined ? '' : ` (${source})`}: ${reason}`);
  }
}

const hostPort = z
  .string()
  .regex(/^[A-Za-z0-9.\-]+:\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:7070')
  .refine((s) => Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');

const multiaddrString = z.string().refine((s) => {
  try {
    multiaddr(s);
    return s.startsWith('/');
  } catch {
    return false;
  }
}, 'expected a multiaddr, e.g. /ip4/127.0.0.1/tcp/7071');

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * Every setting: its type (a zod schema), default and description. Lists are written
 * comma-separated in flags and the environment, as JSON arrays in the config file.
 */
export const settings = {
  dataDir: z.string().min(1).default('.rankmesh/node').describe('Directory for the identity key, pre-shared key, token and database'),
  httpAddr: hostPort.default('127.0.0.1:7070').describe('HTTP API address (host:port; port 0 picks a free one)'),
  listen: z.array(multiaddrString).min(1).default(['/ip4/127.0.0.1/tcp/7071']).describe('libp2p listen multiaddrs'),
  peers: z.array(multiaddrString).default([]).describe('Bootstrap peers (multiaddrs, ending in /p2p/PEER_ID where known); redialled with back-off when lost'),
  meshId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'expected 1-64 letters, digits, - or _').default('local').describe('Name of the mesh; nodes of other meshes ignore this one'),
  worldSize: z.number().int().min(1).max(65536).default(1).describe('Number of ranks of the mesh'),
  token: z.string().default('').describe('Bearer token for mutating HTTP routes; empty: generated into the file token in dataDir'),
  keyFile: z.string().default('').describe('Pre-shared key file of the private network; empty: swarm.key in dataDir, created if missing'),
  logLevel: z.enum(logLevels).default('info').describe('Log level'),
  gossipHeartbeatIntervalMs: z.number().int().min(10).max(60_000).default(700).describe('gossipsub heartbeat interval'),
  peerConnectionsTarget: z.number().int().min(1).max(1024).default(24).describe('Peers learned through peer exchange that a node dials and keeps connected (more connect to it); others are dialled when a request or probe needs them and reached by gossip relays. Meshes up to this size + 1 are fully connected'),
  gossipMeshDegree: z.number().int().min(1).max(12).default(1).describe('gossipsub mesh degree D: peers each message is relayed to besides the publisher\'s own sends to every peer (more: sturdier against lossy links, more duplicate copies per message)'),
  ipColocationFactorWeight: z.number().max(0).default(0).describe('gossipsub IP-colocation penalty weight (0: off, right for hosts sharing an address)'),
  requestTimeoutMs: z.number().int().min(1).default(5000).describe('Default timeout of a direct request to one peer'),
  requestBytesMax: z.number().int().min(1).max(64 * 1024 * 1024).default(1024 * 1024).describe('Largest direct request or response, in bytes'),
  peerInvalidPerMinuteMax: z.number().int().min(0).default(20).describe('Invalid gossip messages a peer may send in a minute; one more disconnects and blocks it'),
  peerBlockMs: z.number().int().min(0).default(60_000).describe('How long a peer blocked for invalid gossip is refused'),
  httpBodyBytesMax: z.number().int().min(1).max(256 * 1024 * 1024).default(1024 * 1024).describe('Largest HTTP request body, in bytes (413 beyond)'),
  httpMutationsPerSecond: z.number().positive().default(1000).describe('Mutating HTTP requests per second one client address may make, sustained (429 with Retry-After beyond)'),
  httpMutationBurst: z.number().int().min(1).default(2000).describe('Mutating HTTP requests one client address may make at once before httpMutationsPerSecond applies'),
  redialMinMs: z.number().int().min(1).default(250).describe('First back-off before redialling a lost peer'),
  redialMaxMs: z.number().int().min(1).default(10_000).describe('Longest back-off between redials of a lost peer'),
  tickMs: z.number().int().min(5).max(10_000).default(50).describe('Protocol tick: the core counts time in ticks of this length'),
  heartbeatIntervalMs: z.number().int().min(0).default(0).describe('Interval between membership heartbeats (rounded to whole ticks); 0: 300 ms up to 8 ranks, then 300 ms × (worldSize / 8)² up to 10 s (4.8 s at 32 ranks), so a node hears fewer heartbeats a second as the mesh grows (27 at 8 ranks, 7 at 32)'),
  suspectMs: z.number().int().min(0).default(0).describe('Silence after which a peer is suspected and probed directly (rounded to whole ticks); 0: three heartbeat intervals'),
  probeTimeoutMs: z.number().int().min(1).default(1000).describe('A direct probe (libp2p ping) unanswered this long counts as failed'),
  probeIntervalMs: z.number().int().min(1).default(1000).describe('Interval between scheduled probes of each of the few members this node watches (three libp2p pings in a row); a member most of whose recent probes fail is reported (rounded to whole ticks)'),
  probeRoundTripMs: z.number().int().min(1).default(150).describe('A scheduled probe fails when one of its pings takes longer than this (a lost packet costs at least a 200 ms retransmission timeout; a healthy round trip a few ms)'),
  dataPlanePort: z.number().int().min(0).max(65535).default(0).describe('Port of the CPU data plane (collectives between ranks), on the host of httpAddr; 0 picks a free one'),
  dataPlaneAnnounceIntervalMs: z.number().int().min(0).default(0).refine((v) => v === 0 || v >= 10, 'must be 0 (automatic) or at least 10').describe('Interval between repeated gossip announcements of this node\'s data-plane address (it is also announced when it changes); 0: 5 s up to 8 ranks, then 5 s × (worldSize / 8)², at most 60 s'),
  engineModelSeed: z.number().int().min(0).max(0xffffffff).default(1).describe('Seed of the reference engine\'s weights; every node of a mesh must use the same'),
  engineWarmUpMs: z.number().int().min(0).default(0).describe('Least time the engine warm-up takes (models a real model\'s load and graph capture)'),
  engineReadyBeforeWarmUp: z.boolean().default(false).describe('Announce READY before the warm-up ends, so the ranks admit this node at once and wait for its warm-up (synchronous admission: a benchmark baseline, not for production)'),
  rankQueueCapacity: z.number().int().min(1).default(1024).describe('Requests waiting on this node\'s rank, at most; more are refused with 429'),
  rankBatchRequestsMax: z.number().int().min(1).default(32).describe('Requests in one engine step, at most'),
  rankConnectTimeoutMs: z.number().int().min(1).default(10_000).describe('A communicator\'s ring links must be up within this, and peers\' data-plane addresses known'),
  rankRetryMs: z.number().int().min(1).default(1000).describe('Back-off before a failed communicator build is tried again in an unchanged view'),
  rankRequestTimeoutMs: z.number().int().min(1).default(30_000).describe('POST /v1/rank/infer answers 504 when its result takes longer than this'),
  controlTimeoutMs: z.number().int().min(1).default(60_000).describe('POST /v1/control/* waits this long for this node to reach the target state, then answers 504 with the state reached'),
  closedGraceMs: z.number().int().min(0).default(2000).describe('After the mesh closes (STOP), keep gossiping the closed record at least this long before exiting 0 (a node starting meanwhile learns the close)'),
  closeLingerMs: z.number().int().min(0).default(180_000).describe('After the mesh closes (STOP), keep gossiping the closed record until every peer known in the closed generation holds it (a node cut off when STOP committed learns it when it reconnects), but at most this long; then exit 0'),
  newGeneration: z.boolean().default(false).describe('Start the next generation of a mesh that STOP closed; without it a node that finds its mesh closed (stored or gossiped) exits 0'),
  stopOnStdinEnd: z.boolean().default(false).describe('Stop when standard input closes, so a node never outlives the script that started it'),
  role: z.enum(['rank', 'gateway']).default('rank').describe('rank: the node may hold a rank or be a spare; gateway: it joins the gossip and routes requests but never holds a rank nor counts toward worldSize or quorum'),
  pipelines: z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected pipeline names of 1-64 letters, digits, _ . : or -')).min(1).default(['default']).describe('Pipelines this node accepts requests for (POST /v1/generate refuses others)'),
  demandTimeoutMs: z.number().int().min(1).default(30_000).describe('POST /v1/pipelines/:name/demand waits this long for a plan round to assign the pipeline a rank, then answers 504 with the reason (the record stays open)'),
  planRoundIntervalMs: z.number().int().min(0).default(250).describe('Least time between two plan rounds started because the plan drifted from the demand'),
  planSettleMs: z.number().int().min(0).default(1000).describe('A new view\'s first plan round starts this long after this node took the view (the survivors of a view change commit it up to about a second apart), or at once when a pipeline with demand has no rank or another rank started it; the last plan stays in force meanwhile'),
  demandSyncIntervalMs: z.number().int().min(0).default(0).refine((v) => v === 0 || v >= 10, 'must be 0 (automatic) or at least 10').describe('Interval between gossiped demand summaries and repeated awake reports (both are also sent when they change); a node whose records differ pulls them from the sender. 0: 2 s up to 8 ranks, then 2 s × (worldSize / 8)², at most 60 s'),
  ingressRankQueueCapacity: z.number().int().min(1).default(256).describe('Requests this node has forwarded or will forward to one rank, at most; when every rank is this full, new requests get 429'),
  ingressRankConcurrency: z.number().int().min(1).default(64).describe('Forwards to one rank unanswered at once, at most; the rest wait in that rank\'s queue here'),
  ingressHeldMax: z.number().int().min(1).default(1024).describe('New requests held while the mesh is paused or no rank serves, at most; more get 503'),
  ingressForwardTimeoutMs: z.number().int().min(1).default(10_000).describe('A forward unanswered this long is sent again (the rank answers a repeated id once)'),
  ingressRequestTimeoutMs: z.number().int().min(1).default(600_000).describe('A request not finished this long after it was accepted fails with reason deadline'),
  ingressSyncWaitMs: z.number().int().min(1).default(30_000).describe('A sync POST /v1/generate waits this long for the result, then answers 202 with the id to poll'),
  ingressInputTokensMax: z.number().int().min(1).max(65_536).default(4096).describe('Tokens in one request\'s input, at most (more: 413)'),
  ingressDedupeEntries: z.number().int().min(1).default(4096).describe('Recent request ids a rank remembers with their result, so a repeated forward is answered without running again'),
  ingressFinishedKeptMax: z.number().int().min(1).default(100_000).describe('Finished requests kept for GET /v1/requests/:id, at most; the oldest are deleted first'),
} as const;

export const configSchema = z.object(settings).strict();
export type Config = z.output<typeof configSchema>;
export type SettingName = keyof typeof settings;
export const settingNames = Object.keys(settings) as SettingName[];

/** What the node was asked to do besides running: print help, or run with a config. */
export type LoadResult =
  | { kind: 'config'; config: Config; warnings: string[] }
  | { kind: 'exit'; output: string };

export interface LoadInput {
  argv?: readonly string[];
  env?: Record<string, string | undefined>;
}

/** `--data-dir` for `dataDir`. */
export function flagName(setting: string): string {
  return `--${setting.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** `RANKMESH_DATA_DIR` for `dataDir`. */
export function envName(setting: string): string {
  return `RANKMESH_${setting.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/**
 * Builds the config from defaults < config file < environment < flags.
 * Throws ConfigError naming the setting, where the value came from, and why it is wrong.
 */
export function loadConfig(input: LoadInput = {}): LoadResult {
  const argv = input.argv ?? [];
  const env = input.env ?? {};
  const parsed = parseFlags(argv);
  if (parsed.kind === 'exit') return parsed;

  const raw: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  const configPath = parsed.flags.config ?? env.RANKMESH_CONFIG;
  if (configPath !== undefined && configPath !== '') {
    for (const [key, value] of Object.entries(readConfigFile(configPath))) {
      raw[key] = value;
      sources[key] = `config file ${configPath}`;
    }
  }
  const warnings: string[] = [];
  const known = new Set(settingNames.map(envName).concat('RANKMESH_CONFIG'));
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('RANKMESH_') && !known.has(key)) warnings.push(`unknown environment variable ${key} ignored`);
  }
  for (const name of settingNames) {
    const fromEnv = env[envName(name)];
    if (fromEnv !== undefined) {
      raw[name] = fromText(name, fromEnv);
      sources[name] = `environment ${envName(name)}`;
    }
    const fromFlag = parsed.flags[name];
    if (fromFlag !== undefined) {
      raw[name] = fromText(name, fromFlag);
      sources[name] = `flag ${flagName(name)}`;
    }
  }
  return { kind: 'config', config: validate(raw, sources), warnings };
}

/** Validates a plain object (e.g. built by a test or script) into a Config. */
export function validate(raw: Record<string, unknown>, sources: Record<string, string> = {}): Config {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0] ?? '';
    throw new ConfigError(key, `unknown setting (known: ${settingNames.join(', ')})`, sources[key]);
  }
  const setting = String(issue.path[0] ?? '');
  const got = raw[setting];
  throw new ConfigError(setting, `${issue.message}; got ${JSON.stringify(got)}`, sources[setting]);
}

/** The README's config reference, generated from the schema. */
export function configReferenceMarkdown(): string {
  const rows = settingNames.map((name) => {
    const d = describe(name);
    return `| \`${name}\` | \`${flagName(name)}\` | \`${envName(name)}\` | ${d.type} | \`${JSON.stringify(d.default)}\` | ${d.description} |`;
  });
  return ['| setting | flag | environment | type | default | description |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

type Kind = 'string' | 'number' | 'integer' | 'list' | 'enum' | 'boolean';

interface SettingInfo {
  kind: Kind;
  type: string;
  default: unknown;
  description: string;
}

function describe(name: SettingName): SettingInfo {
  const schema = settings[name];
  const def = schema.def as unknown as { defaultValue: unknown; innerType: z.ZodType };
  const inner = def.innerType;
  const description = schema.description ?? '';
  let kind: Kind = 'string';
  let type = 'string';
  if (inner instanceof z.ZodArray) {
    kind = 'list';
    type = 'list';
  } else if (inner instanceof z.ZodEnum) {
    kind = 'enum';
    type = (inner.options as string[]).join(' \\| ');
  } else if (inner instanceof z.ZodBoolean) {
    kind = 'boolean';
    type = 'true \\| false';
  } else if (inner instanceof z.ZodNumber) {
    kind = inner.isInt ? 'integer' : 'number';
    type = kind;
  }
  return { kind, type, default: def.defaultValue, description };
}

/** Turns flag/environment text into the setting's type; zod then judges the value. */
function fromText(name: SettingName, text: string): unknown {
  const { kind } = describe(name);
  if (kind === 'list') return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (kind === 'boolean') {
    const lower = text.trim().toLowerCase();
    return lower === 'true' || lower === '1' ? true : lower === 'false' || lower === '0' ? false : text;
  }
  if (kind === 'number' || kind === 'integer') {
    const trimmed = text.trim();
    return trimmed !== '' && Number.isFinite(Number(trimmed)) ? Number(trimmed) : text;
  }
  return text;
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('', `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError('', `config file ${path} must hold a JSON object of settings`);
  }
  return value as Record<string, unknown>;
}

type FlagResult = { kind: 'flags'; flags: Record<string, string | undefined> } | { kind: 'exit'; output: string };

function parseFlags(argv: readonly string[]): FlagResult {
  let output = '';
  const program = new Command('rankmesh-node')
    .description('Runs one rankmesh node. Every setting also reads RANKMESH_<SETTING> from the environment.')
    .exitOverride()
    .configureOutput({ writeOut: (s) => (output += s), writeErr: (s) => (output += s) })
    .allowExcessArguments(false)
    .addOption(new Option('--config <file>', 'JSON file of settings (env RANKMESH_CONFIG)'));
  for (const name of settingNames) {
    const d = describe(name);
    const help = `${d.description} (default: ${JSON.stringify(d.default)}; env ${envName(name)})`;
    const option = new Option(`${flagName(name)} <${d.kind === 'list' ? 'a,b' : 'value'}>`, help);
    program.addOption(option);
  }
  try {
    program.parse(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.help')) {
      return { kind: 'exit', output };
    }
    if (err instanceof CommanderError) throw new ConfigError('', err.message.replace(/^error: /, ''));
    throw err;
  }
  return { kind: 'flags', flags: program.opts() };
}
