// A child process playing one node for loop-process.test.ts: its own data plane, reference
// engine and engine loop, built the way the node runtime builds them for an epoch. Driven
// over IPC: it reports its port, builds the epoch from the peer list, and answers requests.
import { CpuDataPlane, createCpuCommunicator, type CpuPeerAddress } from '../../ffi/comm/cpu.ts';
import type { EngineRequest } from '../../node/engine/engine.ts';
import { createEngineLoop, type EngineLoop } from '../../node/engine/loop.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import { epochKey, meshId, meshKey } from '../comm/helpers.ts';

type Command = { type: 'epoch'; peers: CpuPeerAddress[] } | { type: 'request'; req: EngineRequest } | { type: 'exit' };

const meshRank = Number(process.argv[2]);
const plane = await CpuDataPlane.listen({ meshId, meshKey });
const engine = createReferenceEngine({ meshRank, initialMeshRanks: [meshRank] });
const warm = engine.warmUp();
let loop: EngineLoop | null = null;

process.on('message', async (m: Command) => {
  if (m.type === 'epoch') {
    await warm;
    const meshRanks = m.peers.map((p) => p.meshRank);
    const comm = await createCpuCommunicator({ dataPlane: plane, key: epochKey(1), rank: meshRanks.indexOf(meshRank), meshRanks, peers: m.peers });
    loop = createEngineLoop({ engine, comm, validate: (q) => engine.validateRequest(q), onAbort: (reason) => process.send!({ type: 'aborted', reason }) });
    loop.start();
    process.send!({ type: 'ready' });
  } else if (m.type === 'request') {
    loop!.submit(m.req).then(
      (result) => process.send!({ type: 'result', result }),
      (e: Error) => process.send!({ type: 'failed', id: m.req.id, error: e.message }),
    );
  } else {
    loop?.communicator.abort('node exiting');
    await loop?.stop();
    await loop?.communicator.close();
    await plane.close();
    process.exit(0);
  }
});
process.send!({ type: 'listening', port: plane.port });
