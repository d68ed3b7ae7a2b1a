import { describe, expect, test } from '@jest/globals';
import { BatchTemplate, shellQuote } from '../src/template.js';
import { PickupError, PickupStore } from '../src/pickup.js';
import { mapSlurmState, parseSbatchOutput } from '../src/executors/slurm.js';
import { ConfigError, TemplateError, ExecutorError } from '../src/errors.js';
import { parseConfig, type BridgeConfig } from '../src/config.js';
import { DEFAULT_RESOURCES } from '../src/service.js';
import fc from 'fast-check';
import { PickupWireError, decodePickup, encodePickup } from '../src/pickup-wire.js';

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

describe('config resources', () => {
  const base =
    'database: db.sqlite\napiTokenFile: token\nagentCommand: tre-job-agent\npolicy: { file: p.json }\n';
  const parse = (resources: string): BridgeConfig => parseConfig(base + resources, '/etc/tre');

  test('a partial entry keeps the defaults of the fields it leaves out', () => {
    const c = parse('resources:\n  gpus: { max: 2 }\n  cpus: { max: 8, default: 2 }\n');
    expect(c.resources.gpus).toEqual({ max: 2, default: 0, gresName: 'gpu' });
    expect(c.resources.cpus).toEqual({ max: 8, default: 2 });
    expect(c.resources.hours).toEqual(DEFAULT_RESOURCES.hours);
  });

  test.each([
    ['resources: [1]\n', 'resources must be a mapping'],
    ['resources:\n  disks: { max: 1 }\n', 'unknown resource "disks"'],
    ['resources:\n  cpus: { max: 4, min: 1 }\n', 'unknown setting "min" in resources.cpus'],
    ['resources:\n  cpus: { max: -1 }\n', 'resources.cpus.max must be a whole number'],
    ['resources:\n  hours: { max: 4, default: 5 }\n', 'resources.hours.default must be'],
    ['resources:\n  memoryGb: { max: 1.5 }\n', 'resources.memoryGb.max must be'],
    ['resources:\n  gpus: { max: 1, gresName: "gpu;rm" }\n', 'resources.gpus.gresName must be'],
    ['resources:\n  gpus: { max: 1, gresName: null }\n', 'resources.gpus.gresName must be'],
  ])('%s is refused with a clear message', (yaml, message) => {
    expect(() => parse(yaml)).toThrow(ConfigError);
    expect(() => parse(yaml)).toThrow(message);
  });

  test('whatever is given, the result is complete or the file is refused', () => {
    const value = fc.oneof(
      fc.integer({ min: -3, max: 40 }),
      fc.double(),
      fc.string(),
      fc.constant(null),
    );
    const entry = fc.dictionary(fc.constantFrom('max', 'default', 'gresName', 'x'), value, {
      maxKeys: 3,
    });
    const resources = fc.dictionary(fc.constantFrom('cpus', 'memoryGb', 'gpus', 'hours'), entry);
    fc.assert(
      fc.property(resources, (r) => {
        let c: BridgeConfig;
        try {
          c = parse(`resources: ${JSON.stringify(r)}\n`);
        } catch (e) {
          expect(e).toBeInstanceOf(ConfigError);
          return;
        }
        for (const k of ['cpus', 'memoryGb', 'gpus', 'hours'] as const) {
          const { max, default: d } = c.resources[k];
          expect(Number.isInteger(max) && Number.isInteger(d) && d >= 0 && d <= max).toBe(true);
        }
        expect(typeof c.resources.gpus.gresName).toBe('string');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('pickup wire format', () => {
  test('configuration and KEK bytes round-trip; a locked session carries no key', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.jsonValue()),
        fc.option(fc.uint8Array({ minLength: 1, maxLength: 600 })),
        (config, kek) => {
          const wire = encodePickup(config, kek);
          const back = decodePickup(wire);
          expect(back.config).toEqual(JSON.parse(JSON.stringify(config)));
          expect(back.kek === null ? null : new Uint8Array(back.kek)).toEqual(kek);
          // The caller wipes the answer; the KEK it got must not share its memory.
          wire.fill(0);
          if (kek) expect(new Uint8Array(back.kek!)).toEqual(kek);
        },
      ),
    );
  });

  test('any damaged answer is refused with the typed error, never misread', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          const r = decodePickup(bytes);
          expect(typeof r.config).toBe('object');
        } catch (e) {
          expect(e).toBeInstanceOf(PickupWireError);
        }
      }),
    );
    const ok = encodePickup({ a: 1 }, Buffer.from('kek'));
    expect(() => decodePickup(ok.subarray(0, 3))).toThrow(/shorter than its length field/);
    expect(() => decodePickup(ok.subarray(0, 8))).toThrow(/beyond the answer/);
    expect(() => decodePickup(encodePickup({}, null).fill(0x5b, 4))).toThrow(/not UTF-8 JSON/);
    const arr = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('[]')]);
    expect(() => decodePickup(arr)).toThrow(/not an object/);
  });
});
