/**
 * The whole session path, all real: a one-node Slurm (scripts/slurm-local), the bridge, a
 * JupyterHub with the TreSpawner shim and configurable-http-proxy, the job agent and the
 * bubblewrap container with jupyter-server and Xvnc, and headless Chromium on the desktop.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encryptKeyFile, generateKeyPair } from '@tre/crypto';
import { chromium } from 'playwright-core';
import {
  ALL_TRAININGS,
  REPO,
  VENV,
  bridgeApi,
  bridgeSetup,
  freePort,
  Proc,
  slurm,
  startBridgeProcess,
  startSlurm,
  waitFor,
  type BridgeSetup,
} from './support/harness.js';

jest.setTimeout(240_000);

interface HubUser {
  servers?: Record<string, { ready?: boolean }>;
}

const PASSPHRASE = 'correct horse battery staple';
let bridge: BridgeSetup;
let bridgeProc: Proc;
let hubProc: Proc;
let hubUrl: string;
let adminToken: string;
let kekForms: Buffer[];

async function hub(method: string, path: string, body?: unknown, token = adminToken) {
  const res = await fetch(`${hubUrl}/hub/api${path}`, {
    method,
    headers: { Authorization: `token ${token}` },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

function treJobs(): string[] {
  return slurm('squeue', ['--noheader', '--format=%i %j'])
    .split('\n')
    .filter((l) => / tre-/.test(l))
    .map((l) => l.trim().split(' ')[0] as string);
}

/** Every byte form the KEK private key could be written in. */
function forms(priv: Uint8Array): Buffer[] {
  const b = Buffer.from(priv);
  return [
    b,
    Buffer.from(b.toString('base64url')),
    Buffer.from(b.toString('base64').replace(/=+$/, '')),
    Buffer.from(b.toString('hex')),
  ];
}

function containsKek(data: Buffer): boolean {
  return kekForms.some((f) => data.includes(f));
}

beforeAll(async () => {
  startSlurm();
  const kp = await generateKeyPair('x25519');
  kekForms = forms(kp.privateKey);
  const keyFile = await encryptKeyFile(kp, PASSPHRASE);
  const windowEnd = new Date(Date.now() + 2 * 3600_000).toISOString();
  bridge = await bridgeSetup({
    executor: 'slurm',
    policy: `agreementVersion: "1"
people:
  alice:
    agreementVersion: "1"
    keyFile: ${JSON.stringify(keyFile)}
    trainings:${ALL_TRAININGS}
  bob:
    agreementVersion: "1"
    trainings:
      - { kind: hpc, expiresAt: "2020-01-01T00:00:00Z" }
      - { kind: data_awareness, expiresAt: "2099-01-01T00:00:00Z" }
      - { kind: tre_rules, expiresAt: "2099-01-01T00:00:00Z" }
projects:
  demo:
    title: Demo
    consented: true
    members:
      alice: { role: researcher, validUntil: "${windowEnd}" }
      bob: { role: researcher }
`,
  });
  mkdirSync(join(bridge.dir, 'data', 'demo'), { recursive: true });
  writeFileSync(join(bridge.dir, 'data', 'demo', 'readme.txt'), 'project data\n');
  bridgeProc = startBridgeProcess(bridge);
  await waitFor(
    'the bridge',
    async () => (await bridgeApi(bridge, 'GET', '/health')).status === 200,
  );

  const [port, hubPort, proxyApiPort] = [await freePort(), await freePort(), await freePort()];
  hubUrl = `http://127.0.0.1:${port}`;
  adminToken = `${bridge.token}-tester`;
  writeFileSync(
    join(bridge.dir, 'jupyterhub_config.py'),
    `c = get_config()
c.JupyterHub.bind_url = '${hubUrl}'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:${hubPort}'
c.JupyterHub.db_url = 'sqlite:///${bridge.dir}/hub.sqlite'
c.JupyterHub.cookie_secret_file = '${bridge.dir}/cookie_secret'
c.JupyterHub.spawner_class = 'tre'
c.JupyterHub.authenticator_class = 'dummy'
c.ConfigurableHTTPProxy.command = ['${join(REPO, 'node_modules', '.bin', 'configurable-http-proxy')}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${proxyApiPort}'
c.TreSpawner.bridge_url = 'http://127.0.0.1:${bridge.apiPort}'
c.TreSpawner.bridge_token_file = '${bridge.dir}/token'
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 60
c.JupyterHub.load_roles = [{'name': 'tester', 'scopes': ['admin:users', 'admin:servers', 'tokens', 'access:servers'], 'services': ['tester']}]
c.JupyterHub.services = [{'name': 'tester', 'api_token': '${adminToken}'}]
`,
  );
  hubProc = new Proc([join(VENV, 'bin', 'jupyterhub'), '-f', 'jupyterhub_config.py'], {
    cwd: bridge.dir,
    log: join(bridge.dir, 'hub.log'),
    env: { PATH: `${join(VENV, 'bin')}:${process.env.PATH}` },
  });
  await waitFor('the hub', async () => (await hub('GET', '/')).status === 200, 90_000, 500);
  for (const user of ['alice', 'bob'])
    expect((await hub('POST', `/users/${user}`)).status).toBe(201);
});

afterAll(async () => {
  for (const id of treJobs()) slurm('scancel', [id]);
  await hubProc?.stop();
  await bridgeProc?.stop();
});

describe('sessions on Slurm through JupyterHub', () => {
  test('a policy refusal (expired training) shows its reason and submits no job', async () => {
    const before = treJobs();
    const res = await hub('POST', '/users/bob/server', { project: 'demo' });
    expect(res.status).toBe(403);
    expect(JSON.stringify(res.body)).toMatch(/hpc training expired/);
    expect(treJobs()).toEqual(before);
    const spawnPage = await fetch(`${hubUrl}/hub/spawn-pending/bob`, {
      headers: { Authorization: `token ${adminToken}` },
    });
    await spawnPage.body?.cancel();
    // The bridge recorded no session for bob: nothing was submitted.
    const db = execFileSync(
      join(VENV, 'bin', 'python'),
      [
        '-c',
        `import sqlite3; print(sqlite3.connect('${bridge.dir}/bridge.sqlite').execute("select count(*) from sessions where user='bob'").fetchone()[0])`,
      ],
      { encoding: 'utf8' },
    ).trim();
    expect(db).toBe('0');
  });

  test('start, JupyterLab and the desktop through the hub, stop; the KEK leaks nowhere', async () => {
    const started = Date.now();
    const res = await hub('POST', '/users/alice/server', {
      project: 'demo',
      hours: 4,
      passphrase: PASSPHRASE,
    });
    expect([201, 202]).toContain(res.status);
    const jobId = await waitFor('the job in squeue', () => treJobs()[0], 30_000);
    await waitFor(
      'the server to be ready',
      async () => {
        const user = (await hub('GET', '/users/alice')).body as HubUser;
        return user.servers?.['']?.ready === true;
      },
      180_000,
      500,
    );
    const { token } = (
      await hub('POST', '/users/alice/tokens', {
        scopes: ['access:servers!user=alice', 'read:users:name!user=alice'],
      })
    ).body as { token: string };

    const lab = await waitFor(
      'JupyterLab through the hub',
      async () => {
        const r = await fetch(`${hubUrl}/user/alice/lab`, {
          headers: { Authorization: `token ${token}` },
        });
        const text = await r.text();
        return r.status === 200 ? text : undefined;
      },
      60_000,
    );
    process.stdout.write(
      `session: hub POST to JupyterLab answering ${(Date.now() - started) / 1000} s\n`,
    );
    expect(lab).toMatch(/JupyterLab/);
    // jupyter-server checks this token with the hub through the agent's relay: the relay works.
    const status = await fetch(`${hubUrl}/user/alice/api/contents/readme.txt`, {
      headers: { Authorization: `token ${token}` },
    });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { content: string }).content).toBe('project data\n');

    // The job's time limit stays inside the access window (2 h), though 4 h were asked for.
    const job = slurm('scontrol', ['show', 'job', jobId]);
    const limit = /TimeLimit=(\d+):(\d+):(\d+)/.exec(job);
    expect(limit).not.toBeNull();
    expect(Number(limit?.[1]) * 60 + Number(limit?.[2])).toBeLessThanOrEqual(120);

    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${hubUrl}/user/alice/desktop/?token=${token}`);
      // The desktop page marks its connection state on <body>.
      await page.locator('body[data-state="connected"]').waitFor({ timeout: 30_000 });
      expect(await page.locator('canvas').count()).toBeGreaterThan(0);
    } finally {
      await browser.close();
    }

    // While the session runs: no process shows the KEK in its command line or environment.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      for (const f of ['cmdline', 'environ']) {
        let data: Buffer;
        try {
          data = readFileSync(`/proc/${pid}/${f}`);
        } catch {
          continue;
        }
        expect({ pid, f, leaked: containsKek(data) }).toEqual({ pid, f, leaked: false });
      }
    }

    expect((await hub('DELETE', '/users/alice/server')).status).toBe(204);
    await waitFor('the job to leave the queue', () => !treJobs().includes(jobId), 60_000);

    const record = slurm('scontrol', ['show', 'job', jobId]);
    expect(record).toMatch(new RegExp(`JobId=${jobId}`));
    const script = slurm('scontrol', ['write', 'batch_script', jobId, '-']);
    expect(script).toMatch(/TRE_PICKUP/);
    for (const text of [record, script]) expect(containsKek(Buffer.from(text))).toBe(false);
    const logs = [
      join(bridge.dir, 'bridge.log'),
      join(bridge.dir, 'hub.log'),
      ...readdirSync(join(bridge.dir, 'logs')).map((f) => join(bridge.dir, 'logs', f)),
    ];
    expect(logs.length).toBeGreaterThan(2);
    for (const log of logs) {
      const data = readFileSync(log);
      expect(data.length).toBeGreaterThan(0);
      expect({ log, leaked: containsKek(data) }).toEqual({ log, leaked: false });
    }
    expect(readFileSync(join(bridge.dir, 'hub.log'), 'utf8')).not.toContain(PASSPHRASE);
  });
});
