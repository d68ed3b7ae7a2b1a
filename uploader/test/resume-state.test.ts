/**
 * The resume journal: changes replay in order, a line torn by a kill is cut off (that change
 * never happened) and later appends still read back, and a session of the earlier
 * one-file-per-source layout resumes.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SessionStore } from '../src/resume-state.js';
import type { FileState } from '../src/resume-state.js';

const root = mkdtempSync(join(tmpdir(), 'tre-resume-'));
afterAll(() => rm(root, { recursive: true, force: true }));

const file = (relPath: string, over: Partial<FileState> = {}): FileState => ({
  v: 1,
  relPath,
  size: 10,
  mtimeMs: 1,
  ino: 2,
  uploadId: 'a'.repeat(32),
  fileId: 'b'.repeat(32),
  dir: [],
  entry: { entry: 'x' },
  cipherSize: 60,
  units: [],
  phase: 'uploading',
  ...over,
});

describe('SessionStore', () => {
  it('replays states and unit records in order', async () => {
    const s = new SessionStore(root, 'replay');
    await s.init();
    await s.saveFiles([file('a'), file('b')]);
    await s.saveUnits('a', 0, ['h0', 'h1']);
    await s.saveUnits('a', 1, ['h1b']);
    await s.saveFile(file('b', { phase: 'registered', units: ['z'] }));
    await s.close();
    const again = new SessionStore(root, 'replay');
    await again.init();
    expect(again.loadFile('a')?.units).toEqual(['h0', 'h1b']);
    expect(again.loadFile('b')).toMatchObject({ phase: 'registered', units: ['z'] });
    expect(again.loadFile('c')).toBeUndefined();
    await again.close();
  });

  it('cuts off a torn last line and keeps appending after it', async () => {
    const s = new SessionStore(root, 'torn');
    await s.init();
    await s.saveFile(file('a'));
    await s.close();
    const journal = join(root, 'torn', 'files.jsonl');
    await appendFile(journal, '{"u":"a","first":0,"hashes":["h0"');
    const again = new SessionStore(root, 'torn');
    await again.init();
    expect(again.loadFile('a')?.units).toEqual([]);
    await again.saveUnits('a', 0, ['h9']);
    await again.close();
    expect((await readFile(journal, 'utf8')).split('\n').filter(Boolean)).toHaveLength(2);
    const third = new SessionStore(root, 'torn');
    await third.init();
    expect(third.loadFile('a')?.units).toEqual(['h9']);
    await third.close();
  });

  it('resumes a session of the earlier per-file layout and removes it when finished', async () => {
    await mkdir(join(root, 'legacy', 'files'), { recursive: true });
    await writeFile(
      join(root, 'legacy', 'files', 'x.json'),
      JSON.stringify(file('old', { units: ['u0'] })),
    );
    const s = new SessionStore(root, 'legacy');
    await s.init();
    expect(s.loadFile('old')?.units).toEqual(['u0']);
    await s.finish(
      { v: 1, id: 'legacy', project: 'p', ingress: 'i', createdAt: '' },
      {
        files: 1,
        submitted: false,
      },
    );
    await expect(readFile(join(root, 'legacy', 'files', 'x.json'))).rejects.toThrow();
    expect((await s.loadSession())?.done).toEqual({ files: 1, submitted: false });
  });
});
