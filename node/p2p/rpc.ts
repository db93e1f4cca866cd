// Direct request/response with one peer over a libp2p stream: the requester writes the
// request and closes its side; the responder reads to the end, answers with one status byte
// (0 ok, 1 error followed by a UTF-8 reason) and the response, and closes. Both sides bound
// the bytes they read and the time they wait.
import type { Stream } from '@libp2p/interface';

export type RequestFailure = 'timeout' | 'too-large' | 'unreachable' | 'blocked' | 'unsupported' | 'remote-error' | 'stopped';

export type RequestResult =
  | { ok: true; bytes: Uint8Array }
  | { ok: false; error: RequestFailure; message: string };

/** Answers one request; throwing sends the error's message back as a remote-error. */
export type RequestHandler = (fromPeerId: string, request: Uint8Array) => Uint8Array | Promise<Uint8Array>;

const statusOk = 0;
const statusError = 1;

/** The responder's half: read, call the handler, answer. Never throws. */
export async function serveRequest(stream: Stream, fromPeerId: string, handler: RequestHandler, bytesMax: number, timeoutMs: number): Promise<void> {
  const timer = setTimeout(() => stream.abort(new Error('request timed out')), timeoutMs);
  try {
    const request = await readAll(stream, bytesMax);
    let reply: Uint8Array;
    if (request === undefined) {
      reply = errorFrame(`request larger than ${bytesMax} bytes`);
    } else {
      try {
        const response = await handler(fromPeerId, request);
        reply = response.byteLength > bytesMax ? errorFrame(`response larger than ${bytesMax} bytes`) : okFrame(response);
      } catch (err) {
        reply = errorFrame((err as Error).message ?? String(err));
      }
    }
    if (stream.status === 'open') {
      stream.send(reply);
      await stream.close();
    }
  } catch (err) {
    stream.abort(err as Error);
  } finally {
    clearTimeout(timer);
  }
}

/** The requester's half on an open stream. */
export async function exchange(stream: Stream, request: Uint8Array, bytesMax: number): Promise<RequestResult> {
  stream.send(request);
  await stream.close();
  const frame = await readAll(stream, bytesMax + 1);
  if (frame === undefined) return { ok: false, error: 'too-large', message: `response larger than ${bytesMax} bytes` };
  if (frame.byteLength === 0) return { ok: false, error: 'remote-error', message: 'empty response' };
  const body = frame.subarray(1);
  if (frame[0] === statusOk) return { ok: true, bytes: body };
  return { ok: false, error: 'remote-error', message: new TextDecoder().decode(body) };
}

/** All bytes until the remote closes its side, or undefined past `bytesMax`. */
async function readAll(stream: Stream, bytesMax: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of stream) {
    const bytes = chunk.subarray();
    length += bytes.byteLength;
    if (length > bytesMax) return undefined;
    chunks.push(bytes);
  }
  const out = new Uint8Array(length);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

function okFrame(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(body.byteLength + 1);
  frame[0] = statusOk;
  frame.set(body, 1);
  return frame;
}

function errorFrame(message: string): Uint8Array {
  const text = new TextEncoder().encode(message);
  const frame = new Uint8Array(text.byteLength + 1);
  frame[0] = statusError;
  frame.set(text, 1);
  return frame;
}
