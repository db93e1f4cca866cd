// Covers the metered communicator: it passes peer-activity watching through exactly when the
// communicator it wraps has it. Without it the engine loop cannot sleep between idle
// all-reduces and polls every 100 ms, which was the case on every real node until this test.
import { expect, test } from 'bun:test';
import type { Communicator } from '../../ffi/comm/communicator.ts';
import { meterCommunicator } from '../../node/metrics/communicator.ts';

const metrics = { observeCollective: () => {} };

function fakeComm(watch: boolean): { comm: Communicator; watchers: Array<() => void>; cancelled: number[] } {
  const watchers: Array<() => void> = [];
  const cancelled: number[] = [];
  const base = {
    backend: 'cpu',
    key: { meshId: 'm', generation: 1, epoch: 1 },
    rank: 0,
    size: 2,
    meshRanks: [0, 1],
    allReduce: async <T>(data: T) => data,
    broadcast: async <T>(data: T) => data,
    allGather: async <T>(data: T) => data,
    barrier: async () => {},
    aborted: null,
    abort: () => {},
    close: async () => {},
  };
  const comm = (
    watch
      ? {
          ...base,
          watchPeerActivity: (onActivity: () => void) => {
            const i = watchers.push(onActivity) - 1;
            return () => cancelled.push(i);
          },
        }
      : base
  ) as unknown as Communicator;
  return { comm, watchers, cancelled };
}

test('peer-activity watching is passed through when the wrapped communicator has it', () => {
  const { comm, watchers, cancelled } = fakeComm(true);
  const metered = meterCommunicator(comm, metrics);
  let woken = 0;
  const cancel = metered.watchPeerActivity!(() => woken++);
  expect(watchers).toHaveLength(1);
  watchers[0]!();
  expect(woken).toBe(1);
  cancel();
  expect(cancelled).toEqual([0]);
});

test('and absent when it has not, so the engine loop polls', () => {
  const metered = meterCommunicator(fakeComm(false).comm, metrics);
  expect(metered.watchPeerActivity).toBeUndefined();
});
