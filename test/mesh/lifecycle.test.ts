// The lifecycle state machine (every state × command), the command order, control payload encoding and the resolution of one control round.
import { describe, expect, test } from 'bun:test';
import {
  COMMAND_KINDS,
  type CommandKind,
  type ControlPayload,
  LIFECYCLE_STATES,
  type LifecycleState,
  allowedCommands,
  applyCommand,
  compareCommandIds,
  completionOf,
  decodeControl,
  encodeControl,
  isLegalStep,
  resolveRound,
} from '../../mesh/lifecycle.ts';
import { LifecycleError, RawNode } from '../../mesh/rawnode.ts';
import { firstView } from '../../mesh/view.ts';

// The Megatron diagram, written out as the expected next state ('-' = illegal, dropped).
const EXPECTED: Record<LifecycleState, Record<CommandKind, LifecycleState | '-'>> = {
  RUNNING: { PAUSE: 'PAUSING', UNPAUSE: '-', SUSPEND: '-', RESUME: '-', STOP: '-' },
  PAUSING: { PAUSE: 'PAUSING', UNPAUSE: 'RUNNING', SUSPEND: '-', RESUME: '-', STOP: '-' },
  PAUSED: { PAUSE: 'PAUSED', UNPAUSE: 'RUNNING', SUSPEND: 'SUSPENDING', RESUME: '-', STOP: 'STOPPING' },
  SUSPENDING: { PAUSE: '-', UNPAUSE: '-', SUSPEND: '-', RESUME: '-', STOP: '-' },
  SUSPENDED: { PAUSE: '-', UNPAUSE: '-', SUSPEND: '-', RESUME: 'RESUMING', STOP: 'STOPPING' },
  RESUMING: { PAUSE: '-', UNPAUSE: '-', SUSPEND: '-', RESUME: '-', STOP: '-' },
  STOPPING: { PAUSE: '-', UNPAUSE: '-', SUSPEND: '-', RESUME: '-', STOP: '-' },
  STOPPED: { PAUSE: '-', UNPAUSE: '-', SUSPEND: '-', RESUME: '-', STOP: '-' },
};

const payload = (over: Partial<ControlPayload> = {}): ControlPayload => ({ version: 3, state: 'RUNNING', trusted: true, done: false, commands: [], applied: [], ...over });

describe('state machine', () => {
  for (const state of LIFECYCLE_STATES) {
    for (const kind of COMMAND_KINDS) {
      const want = EXPECTED[state][kind];
      test(`${kind} in ${state} → ${want === '-' ? 'dropped' : want}`, () => {
        const out = applyCommand(state, kind);
        if (want === '-') {
          expect(out.ok).toBe(false);
          if (!out.ok) {
            expect(out.reason).toContain(state);
            expect(out.allowed).toEqual(allowedCommands(state));
            expect(out.allowed).not.toContain(kind);
          }
        } else {
          expect(out).toEqual({ ok: true, next: want, noop: want === state });
        }
      });
    }
  }

  test('transient states complete as the diagram says; stable ones do not', () => {
    expect(LIFECYCLE_STATES.map((s) => completionOf(s))).toEqual([null, 'PAUSED', null, 'SUSPENDED', null, 'PAUSED', 'STOPPED', null]);
  });

  test('legal steps are exactly command changes and completions', () => {
    expect(isLegalStep('RUNNING', 'PAUSING')).toBe(true);
    expect(isLegalStep('PAUSING', 'PAUSED')).toBe(true);
    expect(isLegalStep('RESUMING', 'PAUSED')).toBe(true);
    expect(isLegalStep('RUNNING', 'PAUSED')).toBe(false);
    expect(isLegalStep('PAUSED', 'PAUSED')).toBe(false);
    expect(isLegalStep('SUSPENDED', 'RUNNING')).toBe(false);
  });
});

describe('command order', () => {
  test('one issuer keeps its issue order (natural order of the counter), issuers order by id', () => {
    const ids = ['b.10', 'a.2', 'b.9', 'a.10', 'b.1', 'c'];
    expect([...ids].sort(compareCommandIds)).toEqual(['a.2', 'a.10', 'b.1', 'b.9', 'b.10', 'c']);
    expect(compareCommandIds('x.007', 'x.7')).not.toBe(0);
  });
});

describe('control payloads', () => {
  test('round-trip', () => {
    const p = payload({ state: 'PAUSING', done: true, commands: [{ kind: 'UNPAUSE', id: 'b.1' }], applied: ['a.1'] });
    expect(decodeControl(encodeControl(p))).toEqual(p);
  });

  test('malformed payloads decode to null', () => {
    for (const bad of ['', 'null', '{}', '{"v":-1,"s":"RUNNING","t":1,"d":0,"c":[],"a":[]}', '{"v":1,"s":"HALTED","t":1,"d":0,"c":[],"a":[]}', '{"v":1,"s":"RUNNING","t":1,"d":0,"c":[["JUMP","x"]],"a":[]}', '{"v":1,"s":"RUNNING","t":1,"d":0,"c":[["PAUSE","bad id"]],"a":[]}']) {
      expect(decodeControl(bad)).toBeNull();
    }
  });
});

describe('resolveRound', () => {
  test('the union of commands applies in id order, up to the first state change; illegal ones before it are dropped', () => {
    const r = resolveRound([
      payload({ commands: [{ kind: 'UNPAUSE', id: 'a.1' }, { kind: 'PAUSE', id: 'a.2' }] }),
      payload({ commands: [{ kind: 'SUSPEND', id: 'a.3' }] }),
    ]);
    expect(r).toMatchObject({ kind: 'apply', state: 'PAUSING', version: 4, via: 'command' });
    if (r.kind !== 'apply') throw new Error('unreachable');
    expect(r.dropped.map((d) => d.command.id)).toEqual(['a.1']);
    expect(r.dropped[0]!.allowed).toEqual(['PAUSE']);
    expect(r.applied.map((c) => c.id)).toEqual(['a.2']);
    expect(r.carried.map((c) => c.id)).toEqual(['a.3']);
  });

  test('the result does not depend on which rank saw which command', () => {
    const cmds = [{ kind: 'PAUSE' as const, id: 'x.1' }, { kind: 'UNPAUSE' as const, id: 'y.1' }];
    const a = resolveRound([payload({ commands: cmds }), payload()]);
    const b = resolveRound([payload({ commands: [cmds[1]!] }), payload({ commands: [cmds[0]!] })]);
    expect(a).toEqual(b);
  });

  test('a repeated PAUSE is consumed as a no-op and the next command still applies', () => {
    const r = resolveRound([payload({ state: 'PAUSED', commands: [{ kind: 'PAUSE', id: 'a.1' }, { kind: 'SUSPEND', id: 'a.2' }] })]);
    expect(r).toMatchObject({ kind: 'apply', state: 'SUSPENDING', version: 4, via: 'command' });
    if (r.kind === 'apply') expect(r.applied.map((c) => c.id)).toEqual(['a.1', 'a.2']);
  });

  test('a transient state completes only when every rank is done, and not in a round whose command changed the state', () => {
    expect(resolveRound([payload({ state: 'PAUSING', done: true }), payload({ state: 'PAUSING', done: false })])).toMatchObject({ via: 'none', state: 'PAUSING', version: 3 });
    expect(resolveRound([payload({ state: 'PAUSING', done: true }), payload({ state: 'PAUSING', done: true })])).toMatchObject({ via: 'complete', state: 'PAUSED', version: 4 });
    expect(resolveRound([payload({ state: 'PAUSING', done: true, commands: [{ kind: 'UNPAUSE', id: 'u.1' }] }), payload({ state: 'PAUSING', done: true })])).toMatchObject({ via: 'command', state: 'RUNNING', version: 4 });
  });

  test('STOPPING completes by asking to close; the state stays STOPPING until the closed view commits', () => {
    expect(resolveRound([payload({ state: 'STOPPING', done: true })])).toMatchObject({ kind: 'apply', via: 'none', state: 'STOPPING', close: true });
  });

  test('different versions make a sync round to the newest trusted one; untrusted ones count only when no rank is trusted', () => {
    expect(resolveRound([payload({ version: 3, state: 'PAUSING' }), payload({ version: 4, state: 'PAUSED', commands: [{ kind: 'UNPAUSE', id: 'a.1' }] })])).toEqual({ kind: 'sync', state: 'PAUSED', version: 4 });
    expect(resolveRound([payload({ version: 3 }), payload({ version: 9, state: 'PAUSED', trusted: false })])).toEqual({ kind: 'sync', state: 'RUNNING', version: 3 });
    expect(resolveRound([payload({ version: 2, trusted: false }), payload({ version: 5, state: 'PAUSED', trusted: false })])).toEqual({ kind: 'sync', state: 'PAUSED', version: 5 });
  });

  test('a malformed payload makes the round a sync that applies nothing', () => {
    expect(resolveRound([payload({ commands: [{ kind: 'PAUSE', id: 'a.1' }] }), null])).toEqual({ kind: 'sync', state: 'RUNNING', version: 3 });
  });

  test('a command some rank reports applied is never applied again', () => {
    const r = resolveRound([payload({ commands: [{ kind: 'PAUSE', id: 'a.1' }] }), payload({ applied: ['a.1'] })]);
    expect(r).toMatchObject({ kind: 'apply', via: 'none', state: 'RUNNING', alreadyApplied: ['a.1'] });
  });
});

describe('RawNode lifecycle inputs', () => {
  const node = () => new RawNode({ meshId: 'm', self: 'a', bootId: 'boot1', worldSize: 2, seed: 1 });

  test('command() validates kind and id, throws LifecycleError and changes nothing', () => {
    const n = node();
    expect(() => n.command('HALT' as CommandKind)).toThrow(LifecycleError);
    expect(() => n.command('PAUSE', 'has space')).toThrow(/command id/);
    expect(() => n.command('PAUSE', 'x'.repeat(65))).toThrow(LifecycleError);
    expect(n.lifecycle().pending).toEqual([]);
    expect(n.command('PAUSE')).toBe('boot1.1');
    expect(n.command('PAUSE', 'boot1.1')).toBe('boot1.1');
    expect(n.lifecycle().pending).toEqual([{ kind: 'PAUSE', id: 'boot1.1' }]);
    const sent = n.ready().messages.filter((m) => m.msg.body.type === 'cmd');
    expect(sent.length).toBe(1);
  });

  test('localDone() of a state the node is not in changes nothing; checkCommand() explains a refusal', () => {
    const n = node();
    expect(n.localDone('PAUSING')).toBe(false);
    expect(n.lifecycle()).toMatchObject({ state: 'RUNNING', version: 0, transient: false, localDone: false, allowed: ['PAUSE'] });
    expect(n.checkCommand('SUSPEND')).toEqual({ ok: false, reason: 'SUSPEND is not allowed in state RUNNING (allowed: PAUSE)', allowed: ['PAUSE'] });
    expect(n.checkCommand('PAUSE')).toEqual({ ok: true, next: 'PAUSING', noop: false });
  });

  test('a stored lifecycle of the current generation is restored; a malformed one restores as RUNNING', () => {
    const view = firstView('m', 3, [{ peerId: 'a', bootId: 'old' }, { peerId: 'b', bootId: 'x' }]);
    const base = { meshId: 'm', generation: 3, view, rememberedRank: 0, acceptor: null, form: null };
    const restored = new RawNode({ meshId: 'm', self: 'a', bootId: 'new', worldSize: 2, seed: 1 }, { ...base, lifecycle: { generation: 3, state: 'SUSPENDED', version: 7 } });
    expect(restored.lifecycle()).toMatchObject({ generation: 3, state: 'SUSPENDED', version: 7 });
    const bad = new RawNode({ meshId: 'm', self: 'a', bootId: 'new', worldSize: 2, seed: 1 }, { ...base, lifecycle: { generation: 3, state: 'HALTED' as LifecycleState, version: 7 } });
    expect(bad.lifecycle()).toMatchObject({ state: 'RUNNING', version: 0 });
  });
});
