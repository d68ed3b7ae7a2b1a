/**
 * The lab's project switch in a hub session, end to end: the real JupyterHub with TreSpawner, the
 * bridge with the local executor running the real job agent and JupyterLab with jupyterlab-tre,
 * the real KMS listing the user's projects to the lab, and Chromium. The researcher starts
 * project alpha from the spawn form, switches to beta in the lab's Projects panel, lands on the
 * spawn form with beta chosen, types the passphrase, and the new session runs on beta while the
 * old one is stopped. (The bridge decides with its file policy here; the Slurm e2e covers the
 * KMS policy.)
 */
import { afterAll, beforeAll, expect, jest, test } from '@jest/globals';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { chromium, type Browser, type Page } from 'playwright-core';
import { encryptKeyFile, generateKeyPair } from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service';
import {
  ALL_TRAININGS,
  REPO,
  VENV,
  Proc,
  bridgeApi,
  bridgeSetup,
  freePort,
  startBridgeProcess,
  waitFor,
  type BridgeSetup,
} from './support/harness.js';
import { onboard, startKmsProcess, type RunningKms } from './support/kms.js';

jest.setTimeout(420_000);

const PASSPHRASE = 'switch-test passphrase';

let bridge: BridgeSetup;
let bridgeProc: Proc | undefined;
let hubProc: Proc | undefined;
let kms: RunningKms | undefined;
let browser: Browser | undefined;
let hubUrl: string;
let adminToken: string;

async function hub(method: string, path: string, body?: unknown) {
  const r = await fetch(`${hubUrl}/hub/api${path}`, {
    method,
    headers: { Authorization: `token ${adminToken}`, 'Content-Type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as unknown) : null };
}

interface SessionRow {
  id: string;
  project: string;
  state: string;
  executor_data: string | null;
}

function sessions(): SessionRow[] {
  const db = new Database(join(bridge.dir, 'bridge.sqlite'), { readonly: true });
  try {
    return db
      .prepare(
        "SELECT id, project, state, executor_data FROM sessions WHERE user = 'alice' ORDER BY created_at",
      )
      .all() as SessionRow[];
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

beforeAll(async () => {
  const kek = await generateKeyPair('x25519');
  const keyFile = await encryptKeyFile(kek, PASSPHRASE);
  const member = '{ role: researcher }';
  bridge = await bridgeSetup({
    executor: 'local',
    policy: `agreementVersion: "1"
people:
  alice:
    agreementVersion: "1"
    keyFile: ${JSON.stringify(keyFile)}
    trainings:${ALL_TRAININGS}
projects:
  alpha: { title: Alpha cohort, consented: true, members: { alice: ${member} } }
  beta: { title: Beta cohort, consented: true, members: { alice: ${member} } }
`,
  });
  for (const p of ['alpha', 'beta']) mkdirSync(join(bridge.dir, 'data', p), { recursive: true });

  const [port, hubPort, proxyApiPort] = [await freePort(), await freePort(), await freePort()];
  hubUrl = `http://127.0.0.1:${port}`;
  adminToken = `${bridge.token}-tester`;
  const kmsToken = `${bridge.token}-kms`;
  kms = await startKmsProcess(bridge.dir, `http://127.0.0.1:${hubPort}/hub/api`, kmsToken);
  // The container has no network of its own: the job agent relays the hub's API origin, and the
  // KMS under /services/kms/ on it, as in a site's sessions.
  writeFileSync(
    bridge.configPath,
    `${readFileSync(bridge.configPath, 'utf8')}\n  kmsUrl: ${JSON.stringify(kms.url)}\n`,
  );
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
c.Authenticator.admin_users = {'root'}
c.ConfigurableHTTPProxy.command = ['${join(REPO, 'node_modules', '.bin', 'configurable-http-proxy')}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${proxyApiPort}'
c.TreSpawner.bridge_url = 'http://127.0.0.1:${bridge.apiPort}'
c.TreSpawner.bridge_token_file = '${bridge.dir}/token'
c.Spawner.default_url = '/lab'
c.Spawner.environment = {'TRE_KMS_URL': 'http://127.0.0.1:${hubPort}/services/kms'}
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 120
c.JupyterHub.load_roles = [
  {'name': 'admin', 'services': ['tester'], 'users': ['root']},
  {'name': 'kms', 'scopes': ['read:users'], 'services': ['kms']},
]
c.JupyterHub.services = [{'name': 'tester', 'api_token': '${adminToken}'}, {'name': 'kms', 'api_token': '${kmsToken}'}]
`,
  );
  hubProc = new Proc([join(VENV, 'bin', 'jupyterhub'), '-f', 'jupyterhub_config.py'], {
    cwd: bridge.dir,
    log: join(bridge.dir, 'hub.log'),
    env: { PATH: `${join(VENV, 'bin')}:${process.env.PATH}` },
  });
  await waitFor('the hub', async () => (await hub('GET', '/')).status === 200, 240_000, 500);
  const tokens: Record<string, string> = {};
  for (const user of ['alice', 'pia', 'dora', 'root']) {
    if (user !== 'root') expect((await hub('POST', `/users/${user}`)).status).toBe(201);
    const made = await hub('POST', `/users/${user}/tokens`, {});
    tokens[user] = (made.body as { token: string }).token;
  }
  // What the lab's Projects panel shows: alice in two consented projects she may open now.
  const { KmsClient: Client } = await import('@tre/kms-service');
  const admin: KmsClient = new Client({ baseUrl: kms.url, token: tokens.root! });
  const on = (u: string) => onboard(kms!.url, tokens[u]!, admin, u);
  await on('alice');
  const pi = await on('pia');
  const dora = await on('dora');
  for (const [id, title] of [
    ['alpha', 'Alpha cohort'],
    ['beta', 'Beta cohort'],
  ] as const) {
    await pi.proposeProject({ id, title });
    await pi.addMember(id, { username: 'dora', role: 'data_owner' });
    await pi.addMember(id, { username: 'alice', role: 'researcher' });
    await dora.consent(id);
  }
  bridgeProc = startBridgeProcess(bridge);
  await waitFor(
    'the bridge',
    async () => (await bridgeApi(bridge, 'GET', '/health')).status === 200,
  );
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, 420_000);

afterAll(async () => {
  await browser?.close();
  if (bridge) {
    for (const s of sessions()) {
      if (!['stopped', 'failed'].includes(s.state))
        await bridgeApi(bridge, 'DELETE', `/sessions/${s.id}`);
    }
  }
  await hubProc?.stop();
  await bridgeProc?.stop();
  await kms?.proc.stop();
});

/** Fills the spawn form (project chosen already or now) and waits for JupyterLab. */
async function startFromForm(page: Page, project: string): Promise<void> {
  const select = page.locator('select#tre-project');
  if ((await select.inputValue()) !== project) await select.selectOption(project);
  await page.fill('input[name=passphrase]', PASSPHRASE);
  await page
    .locator('#spawn_form input[type=submit], #spawn_form button[type=submit]')
    .first()
    .click();
  await page.waitForURL(/\/user\/alice\/lab/, { timeout: 240_000 });
  await page.waitForSelector('.jp-SideBar [data-id="tre-projects"]', { timeout: 120_000 });
}

async function projectsPanel(page: Page): Promise<void> {
  const panel = page.locator('#tre-projects');
  if (!(await panel.isVisible())) await page.click('.jp-SideBar [data-id="tre-projects"]');
  await page.waitForSelector('#tre-projects li[data-project="beta"]', { timeout: 60_000 });
}

test('switching from alpha to beta in the lab stops the server and starts beta after the passphrase', async () => {
  const page = await browser!.newPage();
  await page.goto(`${hubUrl}/hub/login?next=${encodeURIComponent('/hub/spawn')}`);
  await page.fill('input[name=username]', 'alice');
  await page.fill('input[name=password]', 'any');
  await page.click('#login_submit');
  await page.waitForSelector('select#tre-project');
  await startFromForm(page, 'alpha');
  await projectsPanel(page);
  expect(await page.getAttribute('#tre-projects .jp-tre-current', 'data-project')).toBe('alpha');
  const [first] = sessions();
  expect(first).toMatchObject({ project: 'alpha', state: 'ready' });
  const firstPid = (JSON.parse(first!.executor_data!) as { pid: number }).pid;
  expect(alive(firstPid)).toBe(true);

  // The switch: the server stops itself through the hub, the page waits for that and then
  // opens the spawn form with beta chosen; nothing starts without the passphrase.
  await page.click('#tre-projects li[data-project="beta"] button[data-action="switch"]');
  await page.waitForURL(/\/hub\/spawn\/alice\?project=beta$/, { timeout: 120_000 });
  await page.waitForSelector('select#tre-project');
  expect(await page.locator('select#tre-project').inputValue()).toBe('beta');
  expect(await page.locator('body').innerText()).toContain(
    'Enter your key passphrase to start project beta.',
  );
  expect(sessions().map((s) => s.state)).toEqual(['stopped']);
  await waitFor('the alpha job to end', () => !alive(firstPid), 30_000);
  const status = (await hub('GET', '/users/alice')).body as {
    servers: Record<string, { ready: boolean }>;
  };
  expect(status.servers['']).toBeUndefined();

  // The passphrase, and the new session runs on beta.
  await startFromForm(page, 'beta');
  await projectsPanel(page);
  expect(await page.getAttribute('#tre-projects .jp-tre-current', 'data-project')).toBe('beta');
  // The new server itself says beta (a token of alice's, as the lab's own calls use).
  const { token } = (
    await hub('POST', '/users/alice/tokens', { scopes: ['access:servers!user=alice'] })
  ).body as { token: string };
  const r = await fetch(`${hubUrl}/user/alice/tre/api/config`, {
    headers: { Authorization: `token ${token}` },
  });
  expect(r.status).toBe(200);
  const config = (await r.json()) as { project: string; mode: string };
  expect(config.mode).toBe('hub');
  expect(config.project).toBe('beta');
  const all = sessions();
  expect(all.map((s) => [s.project, s.state])).toEqual([
    ['alpha', 'stopped'],
    ['beta', 'ready'],
  ]);
});
