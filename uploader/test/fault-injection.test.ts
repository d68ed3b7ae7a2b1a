/**
 * Fault injection: RUNS runs of a mixed upload (one large file and many small ones), each
 * interrupted by kill -9 of the client or of the ingress server at a random moment, then
 * resumed by running the same command again until it succeeds. After every run the request
 * is confirmed and the project tree decrypted: every file must be byte-identical, with no
 * duplicates and no orphans (no leftover tus uploads, staging files or stray database rows).
 *
 * Scale: CI runs 20 runs of one 6 MiB file + 24 small files (0-48 KiB) so the suite stays
 * within a few minutes on two cores. TRE_FAULT_FULL=1 runs the full scale (one 1 GiB
 * file + 2,000 small files per run); the seed comes from TRE_FAULT_SEED or the clock and is
 * printed so a failure can be replayed.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import Database from 'better-sqlite3';
import {
  api,
  decryptProject,
  killAll,
  makeTree,
  sleep,
  startIngress,
  TOKENS,
  tre,
  uploadArgs,
  writeUsers,
} from './helpers.js';
import type { Ingress } from './helpers.js';

const FULL = process.env.TRE_FAULT_FULL === '1';
const RUNS = 20;
const BIG = FULL ? 1024 * 1024 * 1024 : 6 * 1024 * 1024;
const SMALL = FULL ? 2000 : 24;
const SEED = Number(process.env.TRE_FAULT_SEED ?? Date.now() % 1_000_000);

/** mulberry32: a small seeded generator so a failing run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const dir = mkdtempSync(join(tmpdir(), 'tre-fault-'));
const root = join(dir, 'server');
const src = join(dir, 'src', 'mixed');
const mk = randomBytes(32).toString('hex');
const projects = Array.from({ length: RUNS }, (_, i) => `f${i}`);
const CALIBRATION = 'calibration';
let ingress: Ingress;

async function listFiles(base: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(base, p));
    }
  };
  await walk(base);
  return out.sort();
}

beforeAll(async () => {
  const rand = rng(SEED);
  const files: Record<string, number> = { 'large.bin': BIG };
  for (let i = 0; i < SMALL; i++) files[`s${i % 7}/f${i}.dat`] = Math.floor(rand() * 48 * 1024);
  await makeTree(src, files);
  await writeUsers(join(dir, 'users.json'), [...projects, CALIBRATION]);
  ingress = await startIngress(root, join(dir, 'users.json'));
  process.stderr.write(`fault injection: seed ${SEED}, ${RUNS} runs, ${BIG} + ${SMALL} files\n`);
}, 600_000);

afterAll(async () => {
  await ingress?.stop();
  killAll();
  await rm(dir, { recursive: true, force: true });
});

describe('kill -9 during upload, then resume', () => {
  it(
    `${RUNS} interrupted runs end byte-identical with no duplicates and no orphans`,
    async () => {
      const rand = rng(SEED + 1);
      const want = await listFiles(join(dir, 'src'));
      const kills = { client: 0, server: 0, finishedBeforeKill: 0 };
      // A fixed delay would let fast machines finish before the kill: the kill moment is a
      // random fraction of how long an uninterrupted run takes on this machine.
      const started = Date.now();
      const calibration = await tre(
        uploadArgs({
          paths: [src],
          project: CALIBRATION,
          ingress: ingress.url,
          dir,
          state: join(dir, 'state-calibration'),
        }),
        mk,
      ).done;
      expect({ code: calibration.code, stderr: calibration.stderr }).toEqual({
        code: 0,
        stderr: '',
      });
      let runMs = Date.now() - started;
      const calibrationId = /ingress request ([0-9a-f]+)/.exec(calibration.stdout)![1]!;
      const confirmed = await api(
        ingress.url,
        TOKENS.bob,
        'POST',
        `/v1/ingress-requests/${calibrationId}/review`,
        { decision: 'confirm' },
      );
      expect(confirmed.status).toBe(200);
      process.stderr.write(`fault injection: an uninterrupted run takes ${runMs} ms\n`);
      for (let run = 0; run < RUNS; run++) {
        const project = projects[run]!;
        const args = uploadArgs({
          paths: [src],
          project,
          ingress: ingress.url,
          dir,
          state: join(dir, `state-${run}`),
        });
        const withUrl = (): string[] => args;
        const first = tre(withUrl(), mk);
        await sleep(runMs * (0.05 + 0.75 * rand()));
        const victim = rand() < 0.5 ? 'client' : 'server';
        if (first.proc.exitCode !== null) {
          kills.finishedBeforeKill++;
          runMs *= 0.7;
        } else if (victim === 'client') {
          first.proc.kill('SIGKILL');
          kills.client++;
        } else {
          await ingress.kill9();
          kills.server++;
          // Same port: the resumed command must be the same command.
          ingress = await startIngress(root, join(dir, 'users.json'), [], ingress.port);
        }
        let r = await first.done;
        for (let attempt = 0; r.code !== 0 && attempt < 5; attempt++) {
          r = await tre(withUrl(), mk).done;
        }
        expect({ run, code: r.code, stderr: r.stderr }).toEqual({ run, code: 0, stderr: '' });
        const id = /ingress request ([0-9a-f]+)/.exec(r.stdout)![1]!;
        const ok = await api(ingress.url, TOKENS.bob, 'POST', `/v1/ingress-requests/${id}/review`, {
          decision: 'confirm',
        });
        expect(ok.status).toBe(200);

        const out = join(dir, `out-${run}`);
        await decryptProject(join(root, 'projects', project, 'cipher'), mk, out);
        expect(await listFiles(out)).toEqual(want);
        for (const f of want) {
          const [a, b] = await Promise.all([readFile(join(out, f)), readFile(join(dir, 'src', f))]);
          if (!a.equals(b)) throw new Error(`run ${run}: ${f} differs after decryption`);
        }
        await rm(out, { recursive: true });
        expect(await readdir(join(root, 'projects', project, 'staging'))).toEqual([]);
      }
      // No orphans: no unfinished tus upload, every database row of a run is a visible file.
      const db = new Database(join(root, 'ingress.sqlite'), { readonly: true });
      try {
        const rows = db
          .prepare('SELECT project, state, COUNT(*) AS n FROM uploads GROUP BY project, state')
          .all() as Array<{
          project: string;
          state: string;
          n: number;
        }>;
        const visible = rows.filter((r) => r.state === 'visible' && r.project !== CALIBRATION);
        expect(visible.map((r) => r.n)).toEqual(projects.map(() => want.length));
        expect(rows.filter((r) => r.state === 'uploading' || r.state === 'staged')).toEqual([]);
      } finally {
        db.close();
      }
      const tusLeft = await readdir(join(root, 'tus'));
      expect(tusLeft).toEqual([]);
      const ciphertexts = (
        await Promise.all(projects.map((p) => listFiles(join(root, 'projects', p, 'cipher'))))
      ).map((l) => l.filter((f) => !f.endsWith('gocryptfs.diriv') && !f.endsWith('.name')).length);
      expect(ciphertexts).toEqual(projects.map(() => want.length));
      process.stderr.write(`fault injection: ${JSON.stringify(kills)}\n`);
      expect(kills.client + kills.server).toBeGreaterThanOrEqual(RUNS / 2);
    },
    FULL ? 4 * 3600_000 : 600_000,
  );
});
