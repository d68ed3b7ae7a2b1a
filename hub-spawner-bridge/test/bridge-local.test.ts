/**
 * The bridge on its own with real processes: the local executor running the real job agent and
 * container, a bridge restart in the middle of a session, and a failed Slurm submission that
 * must not leave a job behind.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  ALL_TRAININGS,
  bridgeApi,
  bridgeSetup,
  SLURM_CONF,
  slurm,
  startBridgeProcess,
  startSlurm,
  waitFor,
  workDir,
  type BridgeSetup,
} from './support/harness.js';

jest.setTimeout(180_000);

const POLICY = `agreementVersion: "1"
people:
  carol:
    agreementVersion: "1"
    trainings:${ALL_TRAININGS}
projects:
  demo:
    consented: true
    members:
      carol: { role: researcher }
`;

interface Session {
  id: string;
  state: string;
  jobId: string | null;
  url: string | null;
  message: string;
}

let hub: Server;
let hubApi: string;

beforeAll(async () => {
  // Stands in for the hub API that jupyterhub-singleuser calls at start-up.
  hub = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end('{"version": "6.1.1"}');
  });
  await new Promise<void>((r) => hub.listen(0, '127.0.0.1', () => r()));
  hubApi = `http://127.0.0.1:${(hub.address() as AddressInfo).port}/hub/api`;
});

afterAll(async () => {
  await new Promise((r) => hub.close(r));
});

function startBody(user: string) {
  const prefix = `/user/${user}/`;
  return {
    user,
    serverName: '',
    baseUrl: prefix,
    options: { project: 'demo', hours: 1 },
    env: {
      JUPYTERHUB_API_URL: hubApi,
      JUPYTERHUB_API_TOKEN: 'not-a-real-token',
      JUPYTERHUB_CLIENT_ID: `jupyterhub-user-${user}`,
      JUPYTERHUB_USER: user,
      JUPYTERHUB_SERVER_NAME: '',
      JUPYTERHUB_BASE_URL: '/',
      JUPYTERHUB_SERVICE_PREFIX: prefix,
      JUPYTERHUB_SERVICE_URL: `http://127.0.0.1:0${prefix}`,
      JUPYTERHUB_OAUTH_CALLBACK_URL: `${prefix}oauth_callback`,
      JUPYTERHUB_OAUTH_SCOPES: '[]',
      JUPYTERHUB_OAUTH_ACCESS_SCOPES: '[]',
    },
  };
}

async function waitState(b: BridgeSetup, id: string, states: string[], timeoutMs = 120_000) {
  return waitFor(
    `session ${id} to reach ${states.join('/')}`,
    async () => {
      const r = await bridgeApi(b, 'GET', `/sessions/${id}/events?wait=5`);
      const { state } = r.body as { state: string };
      return states.includes(state) ? state : undefined;
    },
    timeoutMs,
    0,
  );
}

function localPid(b: BridgeSetup, id: string): number {
  const db = new Database(join(b.dir, 'bridge.sqlite'), { readonly: true });
  try {
    const row = db.prepare('SELECT executor_data FROM sessions WHERE id = ?').get(id) as {
      executor_data: string;
    };
    return (JSON.parse(row.executor_data) as { pid: number }).pid;
  } finally {
    db.close();
  }
}

function agentPort(b: BridgeSetup, id: string): number {
  const db = new Database(join(b.dir, 'bridge.sqlite'), { readonly: true });
  try {
    return (
      db.prepare('SELECT agent_port FROM sessions WHERE id = ?').get(id) as { agent_port: number }
    ).agent_port;
  } finally {
    db.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('local executor', () => {
  test('runs the session, survives a bridge restart, stops without leftovers', async () => {
    const b = await bridgeSetup({ executor: 'local', policy: POLICY });
    mkdirSync(join(b.dir, 'data', 'demo'), { recursive: true });
    let proc = startBridgeProcess(b);
    try {
      await waitFor(
        'the bridge',
        async () => (await bridgeApi(b, 'GET', '/health')).status === 200,
      );
      expect((await bridgeApi(b, 'GET', '/health')).body).toEqual({ ok: true, executor: 'local' });
      const unauth = await fetch(
        `http://127.0.0.1:${b.apiPort}/api/v1/sessions/${crypto.randomUUID()}`,
        {
          headers: { Authorization: 'Bearer wrong' },
        },
      );
      expect(unauth.status).toBe(401);

      const started = await bridgeApi(b, 'POST', '/sessions', startBody('carol'));
      expect(started.status).toBe(201);
      const s = started.body as Session;
      expect(s.jobId).toMatch(/^local-/);
      expect(await waitState(b, s.id, ['ready', 'failed', 'stopped'])).toBe('ready');
      const gateway = `http://127.0.0.1:${b.gatewayPort}`;
      const api = await fetch(`${gateway}/user/carol/api`);
      expect(api.status).toBe(200);
      expect(((await api.json()) as { version: string }).version).toMatch(/^\d/);
      // The agent answers nobody without the per-job secret only the gateway holds.
      const direct = await fetch(`http://127.0.0.1:${agentPort(b, s.id)}/user/carol/api`);
      expect(direct.status).toBe(403);
      // Nothing routes to a path no session owns.
      expect((await fetch(`${gateway}/user/dave/api`)).status).toBe(503);

      await proc.stop();
      proc = startBridgeProcess(b);
      await waitFor(
        'the bridge again',
        async () => (await bridgeApi(b, 'GET', '/health')).status === 200,
      );
      const after = (await bridgeApi(b, 'GET', `/sessions/${s.id}`)).body as Session;
      expect(after.state).toBe('ready');
      expect((await fetch(`${gateway}/user/carol/api`)).status).toBe(200);
      const second = await bridgeApi(b, 'POST', '/sessions', startBody('carol'));
      expect(second.status).toBe(409);

      const pid = localPid(b, s.id);
      expect(alive(pid)).toBe(true);
      const stopped = await bridgeApi(b, 'DELETE', `/sessions/${s.id}`);
      expect(stopped.status).toBe(200);
      expect(await waitState(b, s.id, ['stopped', 'failed'], 30_000)).toBe('stopped');
      await waitFor('the job process to end', () => !alive(pid), 15_000);
      const events = (await bridgeApi(b, 'GET', `/sessions/${s.id}/events`)).body as {
        events: Array<{ state: string }>;
      };
      expect(events.events.map((e) => e.state)).toEqual(
        expect.arrayContaining([
          'submitting',
          'pending',
          'running',
          'ready',
          'stopping',
          'stopped',
        ]),
      );
      const log = readFileSync(join(b.dir, 'logs', `tre-session-${s.jobId}.log`), 'utf8');
      expect(log).toMatch(/session ready/);
    } finally {
      await proc.stop();
    }
  });
});

describe('slurm executor', () => {
  test('a submission that fails after sbatch created the job leaves no job behind', async () => {
    startSlurm();
    const dir = workDir('tre-orphan-');
    // sbatch succeeds, then the command reports failure: the bridge never learns the job id.
    const wrapper = join(dir, 'sbatch-then-fail');
    writeFileSync(
      wrapper,
      `#!/bin/bash\nSLURM_CONF=${SLURM_CONF} sbatch "$@" > ${dir}/created-job\nexit 1\n`,
    );
    chmodSync(wrapper, 0o755);
    const b = await bridgeSetup({ executor: 'slurm', policy: POLICY, dir });
    writeFileSync(
      b.configPath,
      readFileSync(b.configPath, 'utf8').replace(
        /^slurm: \{ env: (.*) \}$/m,
        `slurm: { sbatch: ${JSON.stringify(wrapper)}, env: $1 }`,
      ),
    );
    mkdirSync(join(dir, 'data', 'demo'), { recursive: true });
    const bridge = startBridgeProcess(b);
    try {
      await waitFor(
        'the bridge',
        async () => (await bridgeApi(b, 'GET', '/health')).status === 200,
      );
      const res = await bridgeApi(b, 'POST', '/sessions', startBody('carol'));
      expect(res.status).toBe(502);
      expect((res.body as { error: { code: string } }).error.code).toBe('executor_failed');
      const jobId = readFileSync(join(dir, 'created-job'), 'utf8').trim();
      expect(jobId).toMatch(/^\d+$/);
      await waitFor(
        'the orphan to be cancelled',
        () => !slurm('squeue', ['--noheader', '--format=%i']).split('\n').includes(jobId),
        30_000,
      );
      expect(slurm('scontrol', ['show', 'job', jobId])).toMatch(/JobState=CANCELLED/);
    } finally {
      await bridge.stop();
    }
  });
});
