/**
 * The key agent's body validation and the freeze records, without a mount: every body either
 * parses into the documented shape or is refused with a 400 and a message; freeze records
 * survive a reload, a tampered or foreign record is ignored, lifting removes it.
 */
import { describe, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentValidator, type AgentRoute } from '../src/agent-api.js';
import { AgentError } from '../src/errors.js';
import { FREEZE_DIR, FreezeStore, freezeMacKey } from '../src/freeze.js';

const v = new AgentValidator();
const ROUTES: AgentRoute[] = [
  '/',
  '/manifest',
  '/freeze',
  '/freeze/lift',
  '/grants',
  '/egress/review-key',
];

function refusal(route: AgentRoute, text: string): AgentError | undefined {
  try {
    v.parse(route, text);
    return undefined;
  } catch (err) {
    if (err instanceof AgentError) return err;
    throw err;
  }
}

describe('key agent bodies', () => {
  test('every operation of the OpenAPI document has a validator', () => {
    expect(v.routes().sort()).toEqual([...ROUTES].sort());
  });

  test('valid bodies parse', () => {
    expect(v.parse('/freeze', '{"paths":["export/a.csv"],"requestId":3}')).toEqual({
      paths: ['export/a.csv'],
      requestId: 3,
    });
    expect(v.parse('/manifest', '{"paths":["/export/a.csv"]}')).toEqual({
      paths: ['/export/a.csv'],
    });
    const wrapped = { v: 1, kid: 'SHA256:x', kem: 'x25519', enc: 'AAAA', ct: 'BBBB' };
    expect(
      v.parse(
        '/egress/review-key',
        JSON.stringify({ projectId: 'p1', fileId: 'a'.repeat(32), wrapped }),
      ),
    ).toEqual({ projectId: 'p1', fileId: 'a'.repeat(32), wrapped });
    expect(
      v.parse(
        '/egress/review-key',
        JSON.stringify({ project: 'p1', requestId: 1, fileId: 'A'.repeat(32) }),
      ),
    ).toEqual({ project: 'p1', requestId: 1, fileId: 'A'.repeat(32) });
  });

  test.each([
    ['/freeze', '{"paths":["a"]}', /requestId/],
    ['/freeze', '{"paths":["a"],"requestId":1.5}', /integer/],
    ['/freeze', '{"paths":["a/../b"],"requestId":1}', /\.\./],
    ['/freeze', '{"paths":["a/./b"],"requestId":1}', /\./],
    ['/freeze', '{"paths":["a/"],"requestId":1}', /empty/],
    ['/freeze', '{"paths":["a","a"],"requestId":1}', /twice/],
    ['/freeze', '{"paths":["a","/a"],"requestId":1}', /twice/],
    ['/manifest', '{"paths":["//a"]}', /pattern|empty/],
    ['/manifest', '{"paths":[]}', /fewer than 1/],
    [
      '/manifest',
      `{"paths":${JSON.stringify(Array.from({ length: 201 }, (_, i) => `f${i}`))}}`,
      /more than 200/,
    ],
    ['/grants', '{"project":"p","x":1}', /unknown field "x"/],
    ['/egress/review-key', '{"project":"p","requestId":1,"fileId":"zz"}', /fileId/],
    ['/', '[]', /object/],
    ['/freeze/lift', 'not json', /JSON/],
  ] as Array<[AgentRoute, string, RegExp]>)('%s %#: a bad body is refused', (route, text, why) => {
    const e = refusal(route, text);
    expect(e?.status).toBe(400);
    expect(e?.message).toMatch(why);
  });

  test('arbitrary bodies are parsed or refused with a 400, never anything else', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ROUTES),
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((j) => JSON.stringify(j)),
        ),
        (route, text) => {
          const e = refusal(route, text);
          if (e) {
            expect(e.status).toBe(400);
            expect(e.message.length).toBeGreaterThan(0);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('freeze records', () => {
  test('recorded, reloaded, verified and lifted', async () => {
    const root = await mkdtemp(join(process.env.TREFS_TEST_TMP ?? tmpdir(), 'trefs-freeze-'));
    try {
      const volumeKey = randomBytes(32);
      const files = [
        { cipherPath: 'dirA/fileB', fileId: 'ab'.repeat(16) },
        { cipherPath: 'fileC', fileId: 'cd'.repeat(16) },
      ];
      const s = new FreezeStore(root, 'p1', freezeMacKey(volumeKey, 'p1'));
      s.refresh();
      s.begin(7, files, new Date());
      // Enforced before it is on disk.
      expect(s.isFrozenPath('dirA/fileB')).toBe(true);
      expect(await readdir(root)).toEqual([]);
      await s.commit(7);
      expect(await readdir(join(root, FREEZE_DIR))).toEqual(['7.json']);
      const text = await readFile(join(root, FREEZE_DIR, '7.json'), 'utf8');
      expect(text).not.toMatch(/csv|export/);

      const warnings: string[] = [];
      const again = new FreezeStore(root, 'p1', freezeMacKey(volumeKey, 'p1'), (m) =>
        warnings.push(m),
      );
      again.refresh(true);
      expect(again.isFrozenPath('fileC')).toBe(true);
      expect(again.covers('dirA')).toBe(true);
      expect(again.covers('dirB')).toBe(false);
      expect(again.isFrozenFile('cd'.repeat(16))).toBe(true);
      expect(warnings).toEqual([]);

      // Another project's key, a tampered record, garbage: ignored and reported.
      const foreign = new FreezeStore(root, 'p1', freezeMacKey(randomBytes(32), 'p1'), (m) =>
        warnings.push(m),
      );
      foreign.refresh(true);
      expect(foreign.hasAny).toBe(false);
      const tampered = JSON.parse(text) as { files: Array<{ cipherPath: string }> };
      tampered.files[0]!.cipherPath = 'elsewhere';
      await writeFile(
        join(root, FREEZE_DIR, '8.json'),
        JSON.stringify({ ...tampered, requestId: 8 }),
      );
      await writeFile(join(root, FREEZE_DIR, '9.json'), '\u0000garbage');
      again.refresh(true);
      expect(again.isFrozenPath('elsewhere')).toBe(false);
      expect(again.isFrozenPath('fileC')).toBe(true);
      expect(warnings.filter((w) => /8\.json|9\.json/.test(w))).toHaveLength(2);

      expect(await s.lift(7)).toBe(true);
      expect(await s.lift(7)).toBe(false);
      again.refresh(true);
      expect(again.hasAny).toBe(false);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
