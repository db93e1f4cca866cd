// Covers a node's identity across restarts of the whole runtime on one data directory: the
// PeerId and the generated secrets survive, the bootId is new every start, starts are counted.
import { describe, expect, test } from 'bun:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { validate } from '../../node/config.ts';
import { loadOrCreateIdentity } from '../../node/identity.ts';
import { Runtime } from '../../node/runtime.ts';
import { tempDir } from './helpers.ts';

const log = pino({ level: 'silent' });

describe('identity', () => {
  test('the PeerId, swarm key and token survive a restart; the bootId does not', async () => {
    const dir = tempDir();
    try {
      const config = validate({ dataDir: dir.path, httpAddr: '127.0.0.1:0', listen: ['/ip4/127.0.0.1/tcp/0'] });
      const first = new Runtime(config, log);
      const one = await first.start();
      const swarmKey = readFileSync(join(dir.path, 'swarm.key'));
      const token = readFileSync(join(dir.path, 'token'));
      const status = (await (await fetch(`${one.httpUrl}/v1/status`)).json()) as { peerId: string; bootId: string };
      expect(status).toMatchObject({ peerId: one.peerId, bootId: one.bootId });
      await first.stop();

      const second = new Runtime(config, log);
      const two = await second.start();
      await second.stop();

      expect(two.peerId).toBe(one.peerId);
      expect(two.bootId).not.toBe(one.bootId);
      expect(one.starts).toBe(1);
      expect(two.starts).toBe(2);
      expect(readFileSync(join(dir.path, 'swarm.key')).equals(swarmKey)).toBe(true);
      expect(readFileSync(join(dir.path, 'token')).equals(token)).toBe(true);
      expect(one.tokenFile).toBe(join(dir.path, 'token'));
    } finally {
      dir.remove();
    }
  }, 20_000);

  test('another data directory is another identity; the key file is owner-only', async () => {
    const a = tempDir();
    const b = tempDir();
    try {
      const first = await loadOrCreateIdentity(a.path);
      const again = await loadOrCreateIdentity(a.path);
      const other = await loadOrCreateIdentity(b.path);
      expect(first.created).toBe(true);
      expect(again.created).toBe(false);
      expect(again.peerId.equals(first.peerId)).toBe(true);
      expect(other.peerId.equals(first.peerId)).toBe(false);
      const { statSync } = await import('node:fs');
      expect(statSync(join(a.path, 'identity.key')).mode & 0o777).toBe(0o600);
    } finally {
      a.remove();
      b.remove();
    }
  });

  test('a token given in the config is used and nothing is generated', async () => {
    const dir = tempDir();
    try {
      const runtime = new Runtime(validate({ dataDir: dir.path, httpAddr: '127.0.0.1:0', listen: ['/ip4/127.0.0.1/tcp/0'], token: 'given' }), log);
      const node = await runtime.start();
      const unauthorized = await fetch(`${node.httpUrl}/v1/anything`, { method: 'POST', headers: { authorization: 'Bearer other' } });
      const authorized = await fetch(`${node.httpUrl}/v1/anything`, { method: 'POST', headers: { authorization: 'Bearer given' } });
      await runtime.stop();
      expect(node.tokenFile).toBeUndefined();
      expect(unauthorized.status).toBe(401);
      expect(authorized.status).toBe(404);
    } finally {
      dir.remove();
    }
  }, 20_000);
});
