/**
 * Model-based random operations in the spirit of fsx: the same seeded sequence of create,
 * write (also past the end: sparse), truncate, read, rename, unlink, mkdir and rmdir runs
 * against trefs and against a plain directory; after every step the touched files must read
 * back identically, and every 100 steps the whole trees are compared.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  truncate,
  unlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import {
  cleanup,
  makeProject,
  prng,
  requireFuse,
  startDaemon,
  type Daemon,
  type Project,
} from './helpers.js';

let p: Project | undefined;
let d: Daemon | undefined;

beforeAll(async () => {
  requireFuse();
  p = await makeProject();
  d = await startDaemon(p);
}, 60_000);

afterAll(async () => {
  await cleanup(p, d);
}, 60_000);

const OPS = Number(process.env.TREFS_FSX_OPS ?? 3000);
const SEED = Number(process.env.TREFS_FSX_SEED ?? Date.now() % 1_000_000);

async function tree(root: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of (await readdir(join(root, rel), { withFileTypes: true })).sort((a, b) =>
    a.name < b.name ? -1 : 1,
  )) {
    const r = join(rel, e.name);
    if (e.isDirectory()) {
      out[r + '/'] = 'dir';
      Object.assign(out, await tree(root, r));
    } else {
      const data = await readFile(join(root, r));
      out[r] = `${data.length}:${digest(data)}`;
    }
  }
  return out;
}

/** jest's deep equality walks a Buffer byte by byte; compare digests instead. */
function digest(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function attempt(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error';
  }
}

test(`random operations match a plain directory (seed ${SEED}, ${OPS} ops)`, async () => {
  const model = join(p!.base, 'model');
  await mkdir(model);
  const roots = [p!.mnt, model];
  const rnd = prng(SEED);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const dirs = ['', 'd1', 'd2', 'd1/sub'];
  const names = ['a', 'b', 'c', 'long-' + 'x'.repeat(200), 'ü-ñame'];
  const path = () => join(pick(dirs), pick(names));
  const maxSize = 300 * 1024;
  let step = 0;
  try {
    for (step = 0; step < OPS; step++) {
      const kind = rnd();
      const f = path();
      let results: string[];
      let touched = f;
      if (kind < 0.3) {
        const pos = Math.floor(rnd() * maxSize);
        const len = 1 + Math.floor(rnd() * (rnd() < 0.7 ? 9000 : 70000));
        const data = Buffer.alloc(len);
        for (let i = 0; i < len; i += 997) data[i] = Math.floor(rnd() * 256);
        data.fill(step & 0xff, 0, Math.min(len, 64));
        results = await Promise.all(
          roots.map((r) =>
            attempt(async () => {
              const fh = await open(join(r, f), 'a+').then(async (h) => {
                await h.close();
                return open(join(r, f), 'r+');
              });
              try {
                await fh.write(data, 0, len, pos);
              } finally {
                await fh.close();
              }
            }),
          ),
        );
      } else if (kind < 0.45) {
        const size = Math.floor(rnd() * maxSize);
        results = await Promise.all(roots.map((r) => attempt(() => truncate(join(r, f), size))));
      } else if (kind < 0.65) {
        const pos = Math.floor(rnd() * maxSize);
        const len = 1 + Math.floor(rnd() * 20000);
        const reads: string[] = [];
        for (const r of roots) {
          try {
            const fh = await open(join(r, f), 'r');
            try {
              const buf = Buffer.alloc(len);
              const { bytesRead } = await fh.read(buf, 0, len, pos);
              reads.push(`${bytesRead}:${digest(buf.subarray(0, bytesRead))}`);
            } finally {
              await fh.close();
            }
          } catch (err) {
            reads.push((err as NodeJS.ErrnoException).code ?? 'error');
          }
        }
        expect(reads[0]).toEqual(reads[1]);
        results = ['ok', 'ok'];
      } else if (kind < 0.75) {
        const to = path();
        touched = to;
        results = await Promise.all(
          roots.map((r) => attempt(() => rename(join(r, f), join(r, to)))),
        );
      } else if (kind < 0.85) {
        results = await Promise.all(roots.map((r) => attempt(() => unlink(join(r, f)))));
      } else if (kind < 0.93) {
        const dir = pick(dirs.slice(1));
        touched = '';
        results = await Promise.all(roots.map((r) => attempt(() => mkdir(join(r, dir)))));
      } else {
        const dir = pick(dirs.slice(1));
        touched = '';
        results = await Promise.all(roots.map((r) => attempt(() => rmdir(join(r, dir)))));
      }
      expect(results[0]).toEqual(results[1]);
      if (touched) {
        const states = await Promise.all(
          roots.map((r) =>
            readFile(join(r, touched)).then(
              (b) => `${b.length}:${digest(b)}`,
              (err: NodeJS.ErrnoException) => err.code ?? 'error',
            ),
          ),
        );
        expect(states[0]).toEqual(states[1]);
        if (!/^E/.test(states[0]!)) {
          const sizes = await Promise.all(
            roots.map((r) => stat(join(r, touched)).then((s) => s.size)),
          );
          expect(sizes[0]).toBe(sizes[1]);
        }
      }
      if (step % 100 === 99) expect(await tree(p!.mnt)).toEqual(await tree(model));
    }
    expect(await tree(p!.mnt)).toEqual(await tree(model));
  } catch (err) {
    throw new Error(
      `fsx failed at step ${step} with seed ${SEED} (replay: TREFS_FSX_SEED=${SEED}): ${(err as Error).message}`,
    );
  } finally {
    await rm(model, { recursive: true, force: true });
  }
}, 600_000);
