// A child process holding one rank of a CPU communicator, driven over IPC by
// cpu-process.test.ts: it reports its port, builds its communicator from the peer list, and
// runs an all-reduce each time it is asked, answering with the result's hash or the abort.
import { createHash } from 'node:crypto';
import { CpuDataPlane, createCpuCommunicator, type CpuPeerAddress } from '../../ffi/comm/cpu.ts';
import { CommAbortedError } from '../../ffi/comm/communicator.ts';
import { dataFor, epochKey, meshId, meshKey } from './helpers.ts';

type Command = { type: 'peers'; peers: CpuPeerAddress[] } | { type: 'allReduce'; length: number } | { type: 'exit' };

const rank = Number(process.argv[2]);
const plane = await CpuDataPlane.listen({ meshId, meshKey });
let comm: Awaited<ReturnType<typeof createCpuCommunicator>> | null = null;

process.on('message', async (m: Command) => {
  if (m.type === 'peers') {
    comm = await createCpuCommunicator({ dataPlane: plane, key: epochKey(1), rank, meshRanks: m.peers.map((p) => p.meshRank), peers: m.peers });
    process.send!({ type: 'ready' });
  } else if (m.type === 'allReduce') {
    try {
      const out = await comm!.allReduce(dataFor(rank, m.length), 'sum');
      process.send!({ type: 'result', hash: createHash('sha256').update(new Uint8Array(out.buffer)).digest('hex') });
    } catch (e) {
      process.send!({ type: 'aborted', reason: e instanceof CommAbortedError ? e.reason : String(e) });
    }
  } else {
    await comm?.close();
    await plane.close();
    process.exit(0);
  }
});
process.send!({ type: 'listening', port: plane.port });
