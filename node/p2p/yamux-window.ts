// @chainsafe/libp2p-yamux sends a window update after every data frame it receives, so every
// small message (a gossip heartbeat, a vote, a ping) costs a second frame back, encrypted
// and written like any other: in an idle mesh that is about a third of each node's CPU. The
// yamux spec leaves the timing to the receiver; rust-yamux, go-yamux and py-libp2p grant new
// credit only once half of the window has been consumed. This does the same: the library's
// own logic runs (window growth, handshake flags, pausing) whenever an update is due.
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

interface WindowFields {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

type WindowUpdater = (this: YamuxStream) => void;

/** Whether a window update is due: always during the handshake, else once half the window is used. */
export function windowUpdateDue(stream: WindowFields): boolean {
  const established = stream.state === StreamState.Established || stream.state === StreamState.SYNSent;
  return !established || stream.recvWindowCapacity <= stream.recvWindow / 2;
}

let installed = false;

/** Installs the half-window rule on every yamux stream of this process. Idempotent. */
export function installYamuxHalfWindowUpdates(): void {
  if (installed) return;
  installed = true;
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: WindowUpdater };
  const original = proto.sendWindowUpdate;
  proto.sendWindowUpdate = function (this: YamuxStream): void {
    if (!windowUpdateDue(this as unknown as WindowFields)) return;
    original.call(this);
  };
}
