// Core messages decoded once per gossip message: the peer guard validates a message, and the
// driver then reads the same bytes object, which takes the guard's result instead of decoding
// again (schema decoding was a few per cent of an idle node's CPU).
import { decode, type DecodeResult } from '../../mesh/wire.ts';

const decoded = new WeakMap<Uint8Array, DecodeResult>();

/** decode() of mesh/wire.ts, remembered for as long as `bytes` lives. Never throws. */
export function decodeCoreOnce(bytes: Uint8Array): DecodeResult {
  let result = decoded.get(bytes);
  if (result === undefined) {
    result = decode(bytes);
    decoded.set(bytes, result);
  }
  return result;
}
