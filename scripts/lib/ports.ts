// Free TCP ports on 127.0.0.1, for scripts and tests that must name a port before a process
// binds it (a bootstrap address is written before its node starts).
import { createServer } from 'node:net';

/**
 * Ports are drawn below Linux's ephemeral range (32768–60999 by default): a port picked there
 * could be taken, before its process binds it, by any outgoing connection of a node already
 * running (a 16-node cluster holds hundreds), and that node would fail to start.
 */
const PORT_LOW = 20_000;
const PORT_HIGH = 32_767;
const handedOut = new Set<number>();

/** A port that was free a moment ago, outside the ephemeral range and not handed out before by this process. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW + 1));
    if (handedOut.has(port)) continue;
    if (await isPortFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${PORT_LOW}..${PORT_HIGH} after 1000 tries`);
}

/** Whether `port` on 127.0.0.1 can be bound right now. */
export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
