/**
 * The whole session path, all real: a one-node Slurm (scripts/slurm-local), the bridge, a
 * JupyterHub with the TreSpawner shim and configurable-http-proxy, the KMS (tre-kms, identities
 * from the hub), the job agent mounting the project through trefs, the bubblewrap container with
 * jupyter-server and Xvnc, and headless Chromium on the spawn page and the desktop.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  encodePublicKey,
  encryptKeyFile,
  generateKeyPair,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service';
import { chromium, type Browser } from 'playwright-core';
import {
  REPO,
  TREFS_COMMAND,
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
import { DAY, onboard, startKmsProcess, withTrefs, type RunningKms } from './support/kms.js';

jest.setTimeout(400_000);

interface HubUser {
  servers?: Record<string, { ready?: boolean }>;
}

const PASSPHRASE = 'correct horse battery staple';
const HELPER = join(REPO, 'jupyterlab-tre', 'helper', 'dist', 'cli.js');
const P = 'demo';
const SECRET_TEXT = `written inside the session ${randomBytes(8).toString('hex')}\n`;
let bridge: BridgeSetup;
let bridgeProc: Proc;
let hubProc: Proc;
let kms: RunningKms;
let hubUrl: string;
let adminToken: string;
let kekForms: Buffer[];
let pia: KeyPair;
const tokens: Record<string, string> = {};
let cipherDir: string;

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

/** This test's jobs only: other sessions may share the cluster. */
function treJobs(): string[] {
  return slurm('squeue', ['--noheader', '--format=%i|%j|%Z'])
    .split('\n')
    .map((l) => l.trim().split('|'))
    .filter(([, name, wd]) => name?.startsWith('tre-') && wd === bridge.dir)
    .map(([id]) => id as string);
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

function walkFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walkFiles(p) : [p];
  });
}

/** Mounts under the bridge's job directories (the agent's trefs mounts). */
function jobMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(join(bridge.dir, 'jobs')));
}

function launch(): Promise<Browser> {
  return chromium.launch({
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
}

/** Project members' KEKs: the PI makes the project key and the volume key, wrapped to each. */
async function publishProject(
  piClient: KmsClient,
  id: string,
  keks: Record<string, KeyPair>,
): Promise<void> {
  const projectKp = await generateKeyPair();
  const wraps = [];
  for (const [username, kp] of Object.entries(keks)) {
    wraps.push({
      username,
      // trefs's wrap contexts (trefs/src/key-source.ts)
      wrapped: await wrapKey(projectKp.privateKey, kp, {
        purpose: 'project-key',
        projectId: id,
        epoch: 1,
      }),
    });
  }
  await piClient.publishEpoch(id, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(randomBytes(32), projectKp, { purpose: 'volume-key', projectId: id }),
    wraps,
  });
}

beforeAll(async () => {
  startSlurm();
  const alice = await generateKeyPair('x25519');
  pia = await generateKeyPair('x25519');
  const dave = await generateKeyPair('x25519');
  kekForms = forms(alice.privateKey);
  bridge = await bridgeSetup({ executor: 'slurm', policy: { kmsUrl: 'http://127.0.0.1:1' } });

  const [port, hubPort, proxyApiPort] = [await freePort(), await freePort(), await freePort()];
  hubUrl = `http://127.0.0.1:${port}`;
  adminToken = `${bridge.token}-tester`;
  const kmsToken = `${bridge.token}-kms`;
  writeFileSync(
    join(bridge.dir, 'jupyterhub_config.py'),
    `c = get_config()
c.JupyterHub.bind_url = '${hubUrl}'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:${hubPort}'
c.JupyterHub.db_url = 'sqlite:///${bridge.dir}/hub.sqlite'
c.JupyterHub.cookie_secret_file = '${bridge.dir}/cookie_secret'
c.JupyterHub.spawner_class = 'tre'
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.ConfigurableHTTPProxy.command = ['${join(REPO, 'node_modules', '.bin', 'configurable-http-proxy')}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${proxyApiPort}'
c.TreSpawner.bridge_url = 'http://127.0.0.1:${bridge.apiPort}'
c.TreSpawner.bridge_token_file = '${bridge.dir}/token'
c.Spawner.start_timeout = 180
c.Spawner.environment = {
    'TRE_KMS_URL': 'http://127.0.0.1:${hubPort}/services/kms',
    'JUPYTER_CONFIG_PATH': '${join(bridge.dir, 'lab-config')}',
}
c.Spawner.http_timeout = 60
c.Authenticator.admin_users = {'root'}
c.JupyterHub.load_roles = [
  {'name': 'admin', 'services': ['tester'], 'users': ['root']},
  {'name': 'kms', 'scopes': ['read:users'], 'services': ['kms']},
]
c.JupyterHub.services = [{'name': 'tester', 'api_token': '${adminToken}'}, {'name': 'kms', 'api_token': '${kmsToken}'}]
`,
  );
  // jupyterlab-tre in the session: its helper run by the node outside's binary (under /usr).
  mkdirSync(join(bridge.dir, 'lab-config'));
  writeFileSync(
    join(bridge.dir, 'lab-config', 'jupyter_server_config.json'),
    JSON.stringify({ TreLab: { helper: [process.execPath, HELPER] } }),
  );
  hubProc = new Proc([join(VENV, 'bin', 'jupyterhub'), '-f', 'jupyterhub_config.py'], {
    cwd: bridge.dir,
    log: join(bridge.dir, 'hub.log'),
    env: { PATH: `${join(VENV, 'bin')}:${process.env.PATH}` },
  });
  await waitFor('the hub', async () => (await hub('GET', '/')).status === 200, 240_000, 500);
  for (const user of ['alice', 'pia', 'dora', 'bob', 'carol', 'dave', 'root']) {
    if (user !== 'root') expect((await hub('POST', `/users/${user}`)).status).toBe(201);
    const made = await hub('POST', `/users/${user}/tokens`, {});
    expect(made.status).toBe(201);
    tokens[user] = (made.body as { token: string }).token;
  }

  // The KMS, with the facts the policy decides on.
  kms = await startKmsProcess(bridge.dir, `http://127.0.0.1:${hubPort}/hub/api`, kmsToken);
  const { KmsClient } = await import('@tre/kms-service');
  const admin = new KmsClient({ baseUrl: kms.url, token: tokens.root as string });
  const on = (u: string, o: Parameters<typeof onboard>[4] = {}) =>
    onboard(kms.url, tokens[u] as string, admin, u, o);
  const aliceC = await on('alice', { kek: alice });
  await aliceC.putKeyFile(await encryptKeyFile(alice, PASSPHRASE));
  const piC = await on('pia', { kek: pia });
  // The data owner reviews egress: filed files' keys are wrapped to her KEK too.
  const doraC = await on('dora', { kek: await generateKeyPair('x25519') });
  await on('bob', { expiredTraining: 'hpc' });
  await on('carol');
  await on('dave', { kek: dave });
  await piC.proposeProject({ id: P, title: 'Demo cohort' });
  const windowEnd = new Date(Date.now() + 2 * 3600_000).toISOString();
  await piC.addMember(P, { username: 'dora', role: 'data_owner' });
  await piC.addMember(P, { username: 'alice', role: 'researcher', validUntil: windowEnd });
  await piC.addMember(P, { username: 'bob', role: 'researcher' });
  await piC.addMember(P, {
    username: 'dave',
    role: 'researcher',
    validFrom: new Date(Date.now() - 10 * DAY).toISOString(),
    validUntil: new Date(Date.now() - DAY).toISOString(),
  });
  await publishProject(piC, P, { pia, alice, dave });
  await doraC.consent(P);
  await piC.proposeProject({ id: 'pending', title: 'Awaiting consent' });
  await piC.addMember('pending', { username: 'dora', role: 'data_owner' });
  await piC.addMember('pending', { username: 'carol', role: 'researcher' });

  // The project's data, written through trefs by the PI: ciphertext on disk.
  cipherDir = join(bridge.dir, 'cipher', P);
  mkdirSync(cipherDir, { recursive: true });
  mkdirSync(join(bridge.dir, 'pia-mnt'));
  await withTrefs(
    {
      cipherDir,
      mountpoint: join(bridge.dir, 'pia-mnt'),
      project: P,
      kms: kms.url,
      token: tokens.pia as string,
    },
    pia,
    (mnt) => writeFile(join(mnt, 'readme.txt'), 'project data\n'),
  );

  // The bridge asks the real KMS and has the agent mount trefs.
  const config = readFileSync(bridge.configPath, 'utf8')
    .replace('kmsUrl: "http://127.0.0.1:1"', `kmsUrl: ${JSON.stringify(kms.url)}`)
    .replace(/readOnlyPaths: \[(.*)\]/, (_m, paths: string) => {
      const lab = ['jupyterlab-tre/helper', 'crypto', 'kms-service', 'node_modules'];
      const more = [...lab.map((p) => join(REPO, p)), join(bridge.dir, 'lab-config')];
      return `readOnlyPaths: [${paths}, ${more.map((p) => JSON.stringify(p)).join(', ')}]`;
    })
    .concat(
      `\n  trefs: ${JSON.stringify({ command: TREFS_COMMAND, cipherRoot: join(bridge.dir, 'cipher'), kmsUrl: kms.url })}\n`,
    );
  writeFileSync(bridge.configPath, config);
  bridgeProc = startBridgeProcess(bridge);
  await waitFor(
    'the bridge',
    async () => (await bridgeApi(bridge, 'GET', '/health')).status === 200,
  );
}, 480_000);

afterAll(async () => {
  if (bridge) for (const id of treJobs()) slurm('scancel', [id]);
  await hubProc?.stop();
  await bridgeProc?.stop();
  await kms?.proc.stop();
});

describe('sessions on Slurm through JupyterHub', () => {
  /** Logs `user` in through the hub's login page and opens the spawn page. */
  async function spawnPage(browser: Browser, user: string) {
    const page = await browser.newPage();
    await page.goto(`${hubUrl}/hub/login`);
    await page.fill('input[name=username]', user);
    await page.fill('input[name=password]', 'any');
    await page.click('#login_submit');
    await page.goto(`${hubUrl}/hub/spawn`);
    return page;
  }

  test("the spawn form lists the user's projects from the KMS with their access windows", async () => {
    const browser = await launch();
    try {
      const page = await spawnPage(browser, 'alice');
      const option = page.locator(`select#tre-project option[value="${P}"]`);
      const text = await option.innerText();
      expect(text).toMatch(/^Demo cohort \(access until \d{4}-\d\d-\d\dT/);
      expect(await option.isDisabled()).toBe(false);
    } finally {
      await browser.close();
    }
  });

  test.each([
    ['bob', P, /a required training has expired/, /hpc training expired/],
    [
      'carol',
      'pending',
      /not every data owner has consented/,
      /not every data owner has consented/,
    ],
    ['dave', P, /access until .*unavailable: access ended at/, /access ended at/],
  ])(
    'the KMS refuses %s in %s: the spawn page shows why and no job is submitted',
    async (user, project, listed, refused) => {
      const before = treJobs();
      const browser = await launch();
      try {
        const page = await spawnPage(browser, user);
        // The form already says why the project cannot start, and does not offer it...
        const option = page.locator(`select#tre-project option[value="${project}"]`);
        expect(await option.innerText()).toMatch(listed);
        expect(await option.isDisabled()).toBe(true);
        // ...and a start forced past the form is refused with the KMS's reason on the page.
        await page.evaluate(
          `(() => { const o = document.querySelector('#tre-project option[value="${project}"]');` +
            ' o.disabled = false; o.selected = true; })()',
        );
        await page
          .locator('#spawn_form input[type=submit], #spawn_form button[type=submit]')
          .first()
          .click();
        // A refusal slower than the hub's slow_spawn_timeout lands on the spawn-pending page,
        // which shows it once the progress stream reports the failure.
        const shown = await waitFor(
          'the refusal on the page',
          async () => {
            const text = await page.locator('body').innerText();
            return refused.test(text) ? text : undefined;
          },
          60_000,
          500,
        );
        expect(shown).toMatch(refused);
      } finally {
        await browser.close();
      }
      const res = await hub('POST', `/users/${user}/server`, { project });
      expect(res.status).toBe(403);
      expect(JSON.stringify(res.body)).toMatch(refused);
      expect(treJobs()).toEqual(before);
      const db = execFileSync(
        join(VENV, 'bin', 'python'),
        [
          '-c',
          `import sqlite3; print(sqlite3.connect('${bridge.dir}/bridge.sqlite').execute("select count(*) from sessions where user='${user}'").fetchone()[0])`,
        ],
        { encoding: 'utf8' },
      ).trim();
      expect(db).toBe('0');
    },
  );

  test('start, trefs data, JupyterLab, egress filed from inside, the desktop through the hub, stop; the KEK leaks nowhere', async () => {
    const started = Date.now();
    const before = new Set(readdirSync(cipherDir));
    const res = await hub('POST', '/users/alice/server', {
      project: P,
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
    const auth = { Authorization: `token ${token}` };
    // The PI's file, ciphertext on disk, reads back as plaintext inside the container (trefs
    // on the node, bound at /data/demo); jupyter-server checks the token with the hub through
    // the agent's relay.
    const read = await fetch(`${hubUrl}/user/alice/api/contents/readme.txt`, { headers: auth });
    expect(read.status).toBe(200);
    expect(((await read.json()) as { content: string }).content).toBe('project data\n');
    // A file written inside lands as ciphertext.
    const put = await fetch(`${hubUrl}/user/alice/api/contents/result.txt`, {
      method: 'PUT',
      headers: { ...auth, 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'file', format: 'text', content: SECRET_TEXT }),
    });
    expect(put.status).toBe(201);
    const added = readdirSync(cipherDir).filter((n) => !before.has(n));
    expect(added).toHaveLength(1);
    expect(added[0]).not.toMatch(/result/);
    const onDisk = await readFile(join(cipherDir, added[0] as string));
    expect(onDisk.length).toBeGreaterThan(SECRET_TEXT.length);
    expect(onDisk.includes(Buffer.from(SECRET_TEXT.trim()))).toBe(false);
    expect(jobMounts()).toHaveLength(1);

    // Filing an egress request from inside the session, through the lab's REST endpoint with
    // the session's token: trefs's key agent, beside the container and reached at /run/tre by
    // its user (nobody in this root job), freezes the files and wraps their keys.
    const json = { ...auth, 'Content-Type': 'application/json' };
    const contents = `${hubUrl}/user/alice/api/contents`;
    const table = 'ward,patients\nA,40\nB,31\n';
    const putFile = (content: string) =>
      fetch(`${contents}/export/admissions.csv`, {
        method: 'PUT',
        headers: json,
        body: JSON.stringify({ type: 'file', format: 'text', content }),
      });
    const mkdir = await fetch(`${contents}/export`, {
      method: 'PUT',
      headers: json,
      body: JSON.stringify({ type: 'directory' }),
    });
    expect(mkdir.status).toBeLessThan(300);
    expect((await putFile(table)).status).toBeLessThan(300);
    const filing = await fetch(`${hubUrl}/user/alice/tre/api/egress`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ title: 'Admissions by ward' }),
    });
    const filingText = await filing.text();
    expect({ status: filing.status, body: filingText.slice(0, 300) }).toMatchObject({
      status: 200,
    });
    const filed = JSON.parse(filingText) as {
      id: number;
      state: string;
      files: Array<{ path: string; fileId: string; size: number; sha256: string }>;
    };
    expect(filed.state).toBe('draft');
    expect(filed.files.map((f) => f.path)).toEqual(['export/admissions.csv']);
    // The KMS holds the manifest: the stored ciphertext's size and hash, keys for all three.
    const { KmsClient } = await import('@tre/kms-service');
    const held = await new KmsClient({ baseUrl: kms.url, token: tokens.alice as string }).egress(
      P,
      filed.id,
    );
    const [file] = held.files;
    expect(held.files).toHaveLength(1);
    expect([file!.fileId, file!.size, file!.sha256]).toEqual([
      filed.files[0]!.fileId,
      filed.files[0]!.size,
      filed.files[0]!.sha256,
    ]);
    expect([...file!.keyHolders].sort()).toEqual(['alice', 'dora', 'pia']);
    const storedFiles = walkFiles(cipherDir).filter((p) => {
      const head = readFileSync(p).subarray(0, 18);
      return head.length === 18 && head.subarray(2).toString('hex') === file!.fileId;
    });
    expect(storedFiles).toHaveLength(1);
    const storedBytes = readFileSync(storedFiles[0]!);
    expect(storedBytes.length).toBe(file!.size);
    expect(createHash('sha256').update(storedBytes).digest('hex')).toBe(file!.sha256);
    // Frozen: neither the session nor anyone on the node can change the filed file.
    expect((await putFile('ward,patients\nA,1\n')).status).toBeGreaterThanOrEqual(400);
    const inMount = join(jobMounts()[0] as string, 'export', 'admissions.csv');
    await expect(writeFile(inMount, 'ward,patients\nA,1\n')).rejects.toMatchObject({
      code: expect.stringMatching(/^(EROFS|EACCES|EPERM)$/),
    });
    expect(readFileSync(inMount, 'utf8')).toBe(table);
    const reread = await fetch(`${contents}/export/admissions.csv`, { headers: auth });
    expect(((await reread.json()) as { content: string }).content).toBe(table);

    // Xvnc in this job runs with the clipboard off and a blacklist the owner cannot trip.
    const jobPids = slurm('scontrol', ['listpids', jobId])
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/)[0] as string)
      .filter((p) => /^\d+$/.test(p));
    const xvnc = jobPids
      .map((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        } catch {
          return [];
        }
      })
      .find((argv) => /Xvnc$/.test(argv[0] ?? ''));
    expect(xvnc).toBeDefined();
    for (const flag of [
      '-BlacklistThreshold=1000000',
      '-AcceptCutText=0',
      '-SendCutText=0',
      '-SendPrimary=0',
      '-SetPrimary=0',
      '-noclipboard',
      '-AllowOverride=desktop',
    ]) {
      expect(xvnc).toContain(flag);
    }
    expect(xvnc?.join(' ')).toMatch(/-rfbport -1 -nolisten tcp/);

    // The job's time limit stays inside the access window (2 h), though 4 h were asked for.
    const job = slurm('scontrol', ['show', 'job', jobId]);
    const limit = /TimeLimit=(\d+):(\d+):(\d+)/.exec(job);
    expect(limit).not.toBeNull();
    expect(Number(limit?.[1]) * 60 + Number(limit?.[2])).toBeLessThanOrEqual(120);

    const browser = await launch();
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
    let scanned = 0;
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      for (const f of ['cmdline', 'environ']) {
        let data: Buffer;
        try {
          data = readFileSync(`/proc/${pid}/${f}`);
        } catch {
          continue;
        }
        scanned++;
        expect({ pid, f, leaked: containsKek(data) }).toEqual({ pid, f, leaked: false });
      }
    }
    expect(scanned).toBeGreaterThan(20);

    expect((await hub('DELETE', '/users/alice/server')).status).toBe(204);
    await waitFor('the job to leave the queue', () => !treJobs().includes(jobId), 60_000);
    // trefs unmounted with the session: no mount is left on the node.
    await waitFor('the trefs mount to go', () => jobMounts().length === 0, 20_000);

    // The file written in the session is there for the next mount, as plaintext only through trefs.
    mkdirSync(join(bridge.dir, 'pia-mnt2'));
    const back = await withTrefs(
      {
        cipherDir,
        mountpoint: join(bridge.dir, 'pia-mnt2'),
        project: P,
        kms: kms.url,
        token: tokens.pia as string,
      },
      pia,
      (mnt) => readFile(join(mnt, 'result.txt'), 'utf8'),
    );
    expect(back).toBe(SECRET_TEXT);

    const record = slurm('scontrol', ['show', 'job', jobId]);
    expect(record).toMatch(new RegExp(`JobId=${jobId}`));
    const script = slurm('scontrol', ['write', 'batch_script', jobId, '-']);
    expect(script).toMatch(/TRE_PICKUP/);
    for (const text of [record, script]) expect(containsKek(Buffer.from(text))).toBe(false);
    const logs = [
      join(bridge.dir, 'bridge.log'),
      join(bridge.dir, 'hub.log'),
      kms.log,
      ...readdirSync(join(bridge.dir, 'logs')).map((f) => join(bridge.dir, 'logs', f)),
    ];
    expect(logs.length).toBeGreaterThan(3);
    const jobLog = readFileSync(join(bridge.dir, 'logs', `tre-session-${jobId}.log`), 'utf8');
    expect(jobLog).toMatch(/trefs-mounted/);
    expect(jobLog).toMatch(/trefs-unmounted/);
    for (const log of logs) {
      const data = readFileSync(log);
      expect(data.length).toBeGreaterThan(0);
      expect({ log, leaked: containsKek(data) }).toEqual({ log, leaked: false });
    }
    expect(readFileSync(join(bridge.dir, 'hub.log'), 'utf8')).not.toContain(PASSPHRASE);
  });
});
