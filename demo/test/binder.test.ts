/**
 * binder/start, as repo2docker runs it before JupyterLab: a real KMS in demo mode with the demo
 * identity; the command it hands over to reaches the KMS as the demo user, a wrong token does not.
 */
import { expect, jest, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/demo.js';

jest.setTimeout(120_000);

const PROBE = `
const token = require('fs').readFileSync(process.env.TRE_TOKEN_FILE, 'utf8').trim();
const url = process.env.TRE_KMS_URL;
(async () => {
  const me = await fetch(url + '/v1/me', { method: 'PUT', headers: { Authorization: 'token ' + token, 'Content-Type': 'application/json' }, body: JSON.stringify({ organisation: 'Binder' }) });
  const wrong = await fetch(url + '/v1/me', { headers: { Authorization: 'token not-the-token' } });
  const health = await fetch(url + '/healthz');
  console.log(JSON.stringify({ register: me.status, user: (await me.json()).username, wrong: wrong.status, health: health.status }));
})();
`;

test('binder/start runs a KMS in demo mode and hands over to the command', () => {
  const state = mkdtempSync(join(tmpdir(), 'tre-binder-'));
  try {
    const r = spawnSync(join(REPO, 'binder', 'start'), [process.execPath, '-e', PROBE], {
      env: { ...process.env, TRE_BINDER_STATE: state },
      encoding: 'utf8',
      timeout: 90_000,
      killSignal: 'SIGKILL',
    });
    expect(r.stdout).toMatch(/KMS in demo mode at http:\/\/127\.0\.0\.1:\d+/);
    const line = r.stdout.trim().split('\n').pop() as string;
    expect(JSON.parse(line)).toEqual({
      register: 200,
      user: 'researcher',
      wrong: 401,
      health: 200,
    });
    expect(r.status).toBe(0);
  } finally {
    // start leaves its services running for JupyterLab's lifetime; a test ends them itself.
    for (const pid of readFileSync(join(state, 'pids'), 'utf8').trim().split(/\s+/)) {
      try {
        process.kill(Number(pid), 'SIGTERM');
      } catch {
        // already gone
      }
    }
    rmSync(state, { recursive: true, force: true });
  }
});
