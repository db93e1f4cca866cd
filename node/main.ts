// `bun run node`: reads the config, starts one node, and stops it cleanly on SIGINT/SIGTERM.
// Exit codes: 0 after a clean stop, 1 when the node cannot start, 2 for a bad config.
import { ConfigError, loadConfig } from './config.ts';
import { createLogger } from './log.ts';
import { MeshClosedError, Runtime } from './runtime.ts';

async function main(): Promise<number> {
  let loaded;
  try {
    loaded = loadConfig({ argv: process.argv.slice(2), env: process.env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`rankmesh: bad configuration: ${err.message}\n(see --help)\n`);
    return 2;
  }
  if (loaded.kind === 'exit') {
    process.stdout.write(loaded.output);
    return 0;
  }
  const { config } = loaded;
  const log = createLogger({ level: config.logLevel });
  for (const warning of loaded.warnings) log.warn(warning);
  // A stray rejection inside a library (an aborted dial, a closed stream) is logged, not fatal:
  // the node keeps serving, and the mesh above it decides whether the peer is healthy.
  process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
  // The same for an error a library emits on a socket or stream nobody listens to (an aborted
  // dial, a reset connection): Bun would end the process for it. A burst of them means the
  // process is broken rather than its network unlucky, and then it exits.
  const uncaught = { windowStartMs: Date.now(), count: 0 };
  process.on('uncaughtException', (err) => {
    const nowMs = Date.now();
    if (nowMs - uncaught.windowStartMs > 60_000) Object.assign(uncaught, { windowStartMs: nowMs, count: 0 });
    uncaught.count += 1;
    log.error({ err }, 'uncaught exception in a callback; the node keeps running');
    if (uncaught.count > 100) {
      log.fatal({ count: uncaught.count }, 'more than 100 uncaught exceptions in a minute; exiting');
      process.exit(1);
    }
  });

  const runtime = new Runtime(config, log);
  let node;
  try {
    node = await runtime.start();
  } catch (err) {
    if (err instanceof MeshClosedError) {
      // Not a failure: the mesh this node belonged to ended. A supervisor restarting it sees 0.
      log.info({ meshId: err.meshId, generation: err.generation, epoch: err.epoch }, err.message);
      return 0;
    }
    log.fatal({ err: { name: (err as Error).name, message: (err as Error).message } }, `cannot start: ${(err as Error).message}`);
    return 1;
  }
  log.info(
    { peerId: node.peerId, bootId: node.bootId, http: node.httpUrl, addresses: node.addresses, dataDir: node.dataDir, starts: node.starts },
    `node ${node.peerId} serving ${node.httpUrl}`,
  );
  if (node.tokenFile !== undefined) log.info({ tokenFile: node.tokenFile }, `bearer token for mutating routes is in ${node.tokenFile}`);

  const reason = await new Promise<string>((resolve) => {
    // A STOP closed the mesh: the closed record keeps being gossiped until every peer this node
    // knows of holds it (so a peer cut off by a partition learns it when it reconnects, and
    // exits too), at least closedGraceMs and at most closeLingerMs; then the process ends with 0.
    void runtime.meshClosed.then(async (closed) => {
      // A spare or a joiner still warming up never waits on a mesh that will not come back
      // (nvidia-resiliency-ext's spares hung, or exited non-zero, at a closed rendezvous).
      const what = {
        member: 'the mesh is closed (STOP)',
        spare: 'the mesh closed (STOP) while this node waited as a spare',
        removed: 'the mesh closed (STOP) while this node was cut off from it (removed from the view before the close)',
        outsider: 'the mesh closed (STOP) before this node was given a rank',
      }[closed.role];
      log.info({ generation: closed.generation, epoch: closed.epoch, role: closed.role, graceMs: config.closedGraceMs, lingerMaxMs: config.closeLingerMs }, `${what}; exiting 0 once the peers it knows of hold the closed record`);
      const why = await runtime.closeLinger.done;
      resolve(why === 'acknowledged' ? 'the mesh closed and every peer known holds the closed record' : 'the mesh closed and closeLingerMs passed');
    });
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
    if (config.stopOnStdinEnd) {
      process.stdin.once('end', () => resolve('standard input closed'));
      process.stdin.resume();
    }
  });
  process.stdin.pause();
  // A second signal while stopping means "now": leave without waiting for the stop.
  const force = (): void => process.exit(1);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  log.info({ reason }, 'stopping');
  await runtime.stop();
  log.info('stopped');
  process.off('SIGINT', force);
  process.off('SIGTERM', force);
  return 0;
}

process.exitCode = await main();
