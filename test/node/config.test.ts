// Covers the node's config: defaults, precedence of flags over environment over file, each
// kind of bad value and its message, --help, and the README's reference table.
import { describe, expect, test } from 'bun:test';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, configReferenceMarkdown, envName, flagName, loadConfig, settingNames, type Config } from '../../node/config.ts';
import { repoRoot, tempDir } from './helpers.ts';

function load(argv: string[] = [], env: Record<string, string> = {}): Config {
  const result = loadConfig({ argv, env });
  if (result.kind !== 'config') throw new Error('expected a config');
  return result.config;
}

function errorOf(argv: string[], env: Record<string, string> = {}): ConfigError {
  try {
    loadConfig({ argv, env });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  test('defaults load with no flags, environment or file', () => {
    const config = load();
    expect(config.dataDir).toBe('.rankmesh/node');
    expect(config.httpAddr).toBe('127.0.0.1:7070');
    expect(config.listen).toEqual(['/ip4/127.0.0.1/tcp/7071']);
    expect(config.peers).toEqual([]);
    expect(config.meshId).toBe('local');
    expect(config.worldSize).toBe(1);
    expect(config.token).toBe('');
    expect(config.logLevel).toBe('info');
  });

  test('every setting has an environment form and a flag', () => {
    expect(envName('dataDir')).toBe('RANKMESH_DATA_DIR');
    expect(flagName('gossipHeartbeatIntervalMs')).toBe('--gossip-heartbeat-interval-ms');
    const env = {
      RANKMESH_DATA_DIR: '/d',
      RANKMESH_HTTP_ADDR: '127.0.0.1:9000',
      RANKMESH_LISTEN: '/ip4/127.0.0.1/tcp/9001',
      RANKMESH_PEERS: '/ip4/127.0.0.1/tcp/9002, /ip4/127.0.0.1/tcp/9003',
      RANKMESH_TOKEN: 'secret',
      RANKMESH_MESH_ID: 'prod',
      RANKMESH_WORLD_SIZE: '8',
      RANKMESH_STOP_ON_STDIN_END: 'true',
    };
    const config = load([], env);
    expect(config).toMatchObject({
      dataDir: '/d',
      httpAddr: '127.0.0.1:9000',
      listen: ['/ip4/127.0.0.1/tcp/9001'],
      peers: ['/ip4/127.0.0.1/tcp/9002', '/ip4/127.0.0.1/tcp/9003'],
      token: 'secret',
      meshId: 'prod',
      worldSize: 8,
      stopOnStdinEnd: true,
    });
  });

  test('flags override the environment, which overrides the config file', () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, 'node.json');
      writeFileSync(file, JSON.stringify({ worldSize: 2, meshId: 'from-file', peers: ['/ip4/127.0.0.1/tcp/1'] }));
      const config = load(['--config', file, '--world-size', '4'], { RANKMESH_WORLD_SIZE: '3', RANKMESH_MESH_ID: 'from-env' });
      expect(config.worldSize).toBe(4);
      expect(config.meshId).toBe('from-env');
      expect(config.peers).toEqual(['/ip4/127.0.0.1/tcp/1']);
    } finally {
      dir.remove();
    }
  });

  const badValues: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['not a number', [], { RANKMESH_WORLD_SIZE: 'many' }, /^setting worldSize \(environment RANKMESH_WORLD_SIZE\): .*expected number.*"many"/],
    ['below the minimum', ['--world-size', '0'], {}, /^setting worldSize \(flag --world-size\): Too small.*>=1; got 0/],
    ['not an integer', ['--world-size', '1.5'], {}, /^setting worldSize \(flag --world-size\): .*expected int/],
    ['not one of the choices', ['--log-level', 'loud'], {}, /^setting logLevel \(flag --log-level\): .*"info".*got "loud"/],
    ['not a multiaddr', [], { RANKMESH_PEERS: '127.0.0.1:7071' }, /^setting peers \(environment RANKMESH_PEERS\): expected a multiaddr/],
    ['not host:port', ['--http-addr', 'localhost'], {}, /^setting httpAddr \(flag --http-addr\): expected host:port/],
    ['a port too large', ['--http-addr', '127.0.0.1:70000'], {}, /^setting httpAddr .*at most 65535/],
    ['a bad mesh name', ['--mesh-id', 'a/b'], {}, /^setting meshId .*letters, digits/],
    ['a bad boolean', ['--stop-on-stdin-end', 'maybe'], {}, /^setting stopOnStdinEnd .*expected boolean/],
    ['an empty list where one is needed', ['--listen', ''], {}, /^setting listen .*Too small/],
  ];
  for (const [kind, argv, env, message] of badValues) {
    test(`a value that is ${kind} is refused with the setting, its source and the reason`, () => {
      const err = errorOf(argv, env);
      expect(err.message).toMatch(message);
      expect(err.setting).not.toBe('');
    });
  }

  test('an unknown flag is refused', () => {
    expect(errorOf(['--wrold-size', '2']).message).toContain("unknown option '--wrold-size'");
  });

  test('a config file: unknown setting, not JSON, not an object, missing', () => {
    const dir = tempDir();
    try {
      const unknown = join(dir.path, 'unknown.json');
      writeFileSync(unknown, JSON.stringify({ wordSize: 2 }));
      const err = errorOf(['--config', unknown]);
      expect(err.setting).toBe('wordSize');
      expect(err.message).toContain(`config file ${unknown}`);
      expect(err.message).toContain('unknown setting');

      const typed = join(dir.path, 'typed.json');
      writeFileSync(typed, JSON.stringify({ peers: '/ip4/127.0.0.1/tcp/1' }));
      expect(errorOf(['--config', typed]).message).toMatch(/^setting peers \(config file .*\): .*expected array/);

      const broken = join(dir.path, 'broken.json');
      writeFileSync(broken, '{ worldSize: 2 ');
      expect(errorOf([], { RANKMESH_CONFIG: broken }).message).toContain(`config file ${broken} is not valid JSON`);

      const array = join(dir.path, 'array.json');
      writeFileSync(array, '[]');
      expect(errorOf(['--config', array]).message).toContain('must hold a JSON object');

      expect(errorOf(['--config', join(dir.path, 'absent.json')]).message).toContain('cannot read config file');
    } finally {
      dir.remove();
    }
  });

  test('an unknown RANKMESH_ variable is reported as a warning, not silently ignored', () => {
    const result = loadConfig({ env: { RANKMESH_WORLDSIZE: '4' } });
    expect(result.kind === 'config' && result.warnings).toEqual(['unknown environment variable RANKMESH_WORLDSIZE ignored']);
  });

  test('--help lists every setting with its default and environment form', () => {
    const result = loadConfig({ argv: ['--help'] });
    if (result.kind !== 'exit') throw new Error('expected help');
    for (const name of settingNames) {
      expect(result.output).toContain(flagName(name));
      expect(result.output).toContain(envName(name));
    }
    expect(result.output).toContain('(default: "127.0.0.1:7070"');
  });

  test('the README reference table is the one generated from the schema', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    expect(readme).toContain(configReferenceMarkdown());
  });
});
