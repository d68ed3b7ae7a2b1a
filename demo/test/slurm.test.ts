/**
 * `scripts/quickstart run --slurm`: the same demo with sessions as jobs of the running one-node
 * Slurm (scripts/slurm-local); a session started through the hub is a job in squeue, and Ctrl-C
 * stops the hub, which cancels the job.
 */
import { afterAll, expect, jest, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ctrlC, processesUsing, REPO, startDemo, type RunningDemo } from './support/demo.js';

jest.setTimeout(420_000);

const SLURM_CONF = join(process.env.TRE_SLURM_DIR ?? '/tmp/tre-slurm', 'slurm.conf');
let demo: RunningDemo | undefined;

/** The demo's job, by id: other TRE jobs may share this Slurm. */
function queued(jobId: string): boolean {
  const r = spawnSync('squeue', ['--noheader', '--format=%i', '--jobs', jobId], {
    encoding: 'utf8',
    env: { ...process.env, SLURM_CONF },
  });
  // squeue refuses an id it has already forgotten: the job is long gone.
  if (r.status !== 0) return false;
  return r.stdout.split('\n').some((l) => l.trim() === jobId);
}

afterAll(async () => {
  if (demo && demo.child.exitCode === null) await ctrlC(demo).catch(() => undefined);
  if (demo && processesUsing(demo.state).length === 0) {
    rmSync(demo.state, { recursive: true, force: true });
  }
});

test('--slurm runs sessions as Slurm jobs, and Ctrl-C cancels them', async () => {
  expect(spawnSync(join(REPO, 'scripts', 'slurm-local'), ['start']).status).toBe(0);
  demo = await startDemo({ args: ['--slurm'] });
  expect(demo.output()).toMatch(/Sessions: Slurm/);
  const api = `http://127.0.0.1:${demo.port + 1}/hub/api`;
  const token = readFileSync(join(demo.state, 'secrets', 'demo-service-token'), 'utf8').trim();
  const passphrase = (
    JSON.parse(readFileSync(join(demo.state, 'secrets', 'key-passphrases.json'), 'utf8')) as Record<
      string,
      string
    >
  ).researcher;
  const res = await fetch(`${api}/users/researcher/server`, {
    method: 'POST',
    headers: { Authorization: `token ${token}` },
    body: JSON.stringify({ project: 'demo', passphrase }),
  });
  expect([201, 202]).toContain(res.status);
  const deadline = Date.now() + 240_000;
  let ready = false;
  let jobId = '';
  while (!ready && Date.now() < deadline) {
    const u = (await (
      await fetch(`${api}/users/researcher`, { headers: { Authorization: `token ${token}` } })
    ).json()) as { servers?: Record<string, { ready?: boolean; state?: { job_id?: string } }> };
    ready = u.servers?.['']?.ready === true;
    jobId = u.servers?.['']?.state?.job_id ?? '';
    if (!ready) await new Promise((r) => setTimeout(r, 1000));
  }
  expect(ready).toBe(true);
  expect(jobId).toMatch(/^\d+$/);
  expect(queued(jobId)).toBe(true);
  expect(await ctrlC(demo)).toBe(0);
  // scancel returns at once; the job leaves the queue when Slurm has ended it.
  for (let i = 0; i < 60 && queued(jobId); i++) await new Promise((r) => setTimeout(r, 1000));
  expect(queued(jobId)).toBe(false);
  expect(processesUsing(demo.state)).toEqual([]);
});
