import { describe, expect, test } from '@jest/globals';
import { BatchTemplate, shellQuote } from '../src/template.js';
import { PickupError, PickupStore } from '../src/pickup.js';
import { mapSlurmState, parseSbatchOutput } from '../src/executors/slurm.js';
import { TemplateError, ExecutorError } from '../src/errors.js';

describe('pickup', () => {
  test('single use, bound to the job, expires, zeroes the key', () => {
    let now = 1000;
    const store = new PickupStore(60_000, () => now);
    const kek = Buffer.from('secret-key-bytes');
    const token = store.create('s1', { kek, config: { a: 1 } });
    expect(() => store.collect('s1', '7', token)).toThrow(new PickupError('not-ready'));
    store.bind('s1', '7');
    expect(() => store.collect('s1', '7', `${token}x`)).toThrow(new PickupError('bad-token'));
    expect(() => store.collect('s1', '8', token)).toThrow(new PickupError('wrong-job'));
    const got = store.collect('s1', '7', token);
    expect(got.kek?.toString()).toBe('secret-key-bytes');
    expect(got.config).toEqual({ a: 1 });
    expect(() => store.collect('s1', '7', token)).toThrow(new PickupError('unknown'));

    const kek2 = Buffer.from('other-key');
    const t2 = store.create('s2', { kek: kek2, config: {} });
    store.bind('s2', '9');
    now += 60_001;
    expect(() => store.collect('s2', '9', t2)).toThrow(new PickupError('expired'));
    expect(kek2.every((b) => b === 0)).toBe(true);
    expect(store.has('s2')).toBe(false);
  });

  test('a running job restarts the clock', () => {
    let now = 0;
    const store = new PickupStore(1000, () => now);
    const token = store.create('s', { kek: null, config: {} });
    store.bind('s', '1');
    now = 900;
    store.extend('s');
    now = 1500;
    expect(store.sweep()).toEqual([]);
    expect(store.collect('s', '1', token).kek).toBeNull();
  });
});

describe('batch template', () => {
  test('quotes values, inserts raw blocks, refuses unknown names', () => {
    const t = BatchTemplate.fromText(
      '#!/bin/bash\n{{!directives}}\necho {{user}}\n{{!pickup_token}}\n',
    );
    const out = t.render({
      directives: '#SBATCH --time=5',
      session_id: 'x',
      user: "o'brien; rm -rf /",
      project: 'p',
      bridge_url: 'u',
      agent_command: 'a',
      pickup_token: 'TOKEN',
      job_name: 'j',
    });
    expect(out).toBe(`#!/bin/bash\n#SBATCH --time=5\necho 'o'\\''brien; rm -rf /'\nTOKEN\n`);
    expect(() => BatchTemplate.fromText('#!/bin/sh\n{{nope}}\n{{!pickup_token}}')).toThrow(
      TemplateError,
    );
    expect(() => BatchTemplate.fromText('#!/bin/sh\necho hi\n')).toThrow(/pickup_token/);
    expect(() => BatchTemplate.fromText('echo\n{{!pickup_token}}')).toThrow(/#!/);
    expect(shellQuote('')).toBe("''");
  });

  test('the default template passes the token on stdin, never as an argument', () => {
    const t = BatchTemplate.load();
    const out = t.render({
      directives: '',
      session_id: 's',
      user: 'u',
      project: 'p',
      bridge_url: 'http://b',
      agent_command: 'agent',
      pickup_token: 'TOKEN123',
      job_name: 'j',
    });
    const lines = out.split('\n');
    const execLine = lines.find((l) => l.startsWith('exec ')) as string;
    expect(execLine).not.toContain('TOKEN123');
    expect(lines[lines.indexOf(execLine) + 1]).toBe('TOKEN123');
  });
});

describe('slurm parsing', () => {
  test('state mapping and sbatch output', () => {
    expect(['PENDING', 'CONFIGURING'].map(mapSlurmState)).toEqual(['pending', 'pending']);
    expect(['RUNNING', 'COMPLETING'].map(mapSlurmState)).toEqual(['running', 'running']);
    expect(['COMPLETED', 'CANCELLED', 'FAILED', 'TIMEOUT'].map(mapSlurmState)).toEqual([
      'gone',
      'gone',
      'gone',
      'gone',
    ]);
    expect(parseSbatchOutput('123\n')).toBe('123');
    expect(parseSbatchOutput('45;cluster\n')).toBe('45');
    expect(() => parseSbatchOutput('Submitted batch job 5')).toThrow(ExecutorError);
  });
});
