/**
 * A real JupyterHub (from the project's .venv) with configurable-http-proxy from npm, and the KMS
 * as a hub-managed service started by the hub itself through `tre-kms serve`, exactly as deployed:
 * the hub hands it JUPYTERHUB_API_TOKEN, JUPYTERHUB_API_URL, JUPYTERHUB_SERVICE_URL and the OAuth
 * client's JUPYTERHUB_CLIENT_ID and JUPYTERHUB_OAUTH_CALLBACK_URL. The console's sign-in runs in
 * Debian's Chromium through the hub's OAuth.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { freePort } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const JUPYTERHUB = join(ROOT, '.venv', 'bin', 'jupyterhub');
const CHP = join(ROOT, 'node_modules', '.bin', 'configurable-http-proxy');
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

let dir: string;
let hub: ChildProcess | undefined;
let hubApi: string;
let kmsUrl: string;
/** The hub's public URL: its proxy routes /services/kms/ to the KMS. */
let publicUrl: string;
const adminToken = randomBytes(24).toString('hex');
const kmsToken = randomBytes(24).toString('hex');
const ingressToken = randomBytes(24).toString('hex');

async function waitFor(url: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  let last = '';
  while (Date.now() < until) {
    if (hub?.exitCode !== null) throw new Error(`jupyterhub exited: ${hubOutput().slice(-2000)}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await r.body?.cancel();
      if (r.ok) return;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready after ${ms} ms (${last}): ${hubOutput().slice(-2000)}`);
}

const hubLog: Buffer[] = [];
const hubOutput = (): string => Buffer.concat(hubLog).toString();

async function hubRequest(method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await fetch(hubApi + path, {
    method,
    headers: { Authorization: `token ${adminToken}`, 'Content-Type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function kmsMe(token: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${kmsUrl}/v1/me`, { headers: { Authorization: `token ${token}` } });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  if (!existsSync(JUPYTERHUB))
    throw new Error(`${JUPYTERHUB} missing: run scripts/quickstart test`);
  dir = mkdtempSync(join(tmpdir(), 'tre-kms-hub-'));
  const [publicPort, hubPort, proxyApiPort, kmsPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  hubApi = `http://127.0.0.1:${hubPort}/hub/api`;
  kmsUrl = `http://127.0.0.1:${kmsPort}`;
  publicUrl = `http://127.0.0.1:${publicPort}`;
  writeFileSync(
    join(dir, 'kms.yaml'),
    `database: kms.sqlite\nauditKey: audit-key.pem\nagreementVersion: "1"\nlogLevel: info\nhub:\n  cacheSeconds: 1\n  services: [ingress]\n`,
  );
  // Tokens reach the hub through its config file (0600), never through argv.
  writeFileSync(
    join(dir, 'jupyterhub_config.py'),
    `
import os
c = get_config()
c.JupyterHub.ip = '127.0.0.1'
c.JupyterHub.port = ${publicPort}
c.JupyterHub.hub_ip = '127.0.0.1'
c.JupyterHub.hub_port = ${hubPort}
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:${proxyApiPort}'
c.ConfigurableHTTPProxy.command = [${JSON.stringify(CHP)}]
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.db_url = 'sqlite:///' + os.path.join(${JSON.stringify(dir)}, 'jupyterhub.sqlite')
c.JupyterHub.cookie_secret_file = os.path.join(${JSON.stringify(dir)}, 'cookie_secret')
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {'boss'}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [
    {
        'name': 'kms',
        'api_token': ${JSON.stringify(kmsToken)},
        'url': ${JSON.stringify(kmsUrl)},
        'command': [${JSON.stringify(process.execPath)}, ${JSON.stringify(CLI)}, 'serve', '--config', ${JSON.stringify(join(dir, 'kms.yaml'))}],
        'cwd': ${JSON.stringify(dir)},
        'oauth_no_confirm': True,
    },
    {'name': 'test-admin', 'api_token': ${JSON.stringify(adminToken)}},
    {'name': 'ingress', 'api_token': ${JSON.stringify(ingressToken)}},
]
c.JupyterHub.load_roles = [
    # Every hub user may open the console (the KMS decides what they may do there).
    {'name': 'user', 'scopes': ['self', 'access:services!service=kms']},
    {'name': 'kms-reads-users', 'scopes': ['read:users'], 'services': ['kms']},
    {'name': 'test-admin', 'scopes': ['admin:users', 'tokens'], 'services': ['test-admin']},
]
`,
    { mode: 0o600 },
  );
  hub = spawn(JUPYTERHUB, ['--config', join(dir, 'jupyterhub_config.py')], {
    cwd: dir,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `${join(ROOT, 'node_modules', '.bin')}:${process.env.PATH}` },
  });
  hub.stdout!.on('data', (d: Buffer) => hubLog.push(d));
  hub.stderr!.on('data', (d: Buffer) => hubLog.push(d));
  await waitFor(`${hubApi}/`, 60_000);
  await waitFor(`${kmsUrl}/healthz`, 30_000);
}, 120_000);

let browser: Browser | undefined;
/** Everything the browser asked for, to check that no code or token outlives the callback. */
const visited: string[] = [];

afterAll(async () => {
  await browser?.close();
  if (hub && hub.exitCode === null && hub.pid) {
    const exited = new Promise((r) => hub!.once('exit', r));
    process.kill(-hub.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      // The hub and everything it started (proxy, KMS) share its process group.
      if (hub!.exitCode === null) process.kill(-hub!.pid!, 'SIGKILL');
    }, 10_000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 30_000);

test('a hub user token is accepted, with the hub admin flag', async () => {
  await hubRequest('POST', '/users', { usernames: ['alice'], admin: false });
  const alice = (await hubRequest('POST', '/users/alice/tokens', {
    note: 'kms test',
    expires_in: 600,
  })) as { token: string };
  const boss = (await hubRequest('POST', '/users/boss/tokens', {
    note: 'kms test',
    expires_in: 600,
  })) as { token: string };

  const a = await kmsMe(alice.token);
  expect(a).toMatchObject({
    status: 200,
    body: { username: 'alice', admin: false, registered: false },
  });
  const b = await kmsMe(boss.token);
  expect(b).toMatchObject({ status: 200, body: { username: 'boss', admin: true } });

  // The hub identity carries through to an action: alice registers, boss (admin) records training.
  const reg = await fetch(`${kmsUrl}/v1/me`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${alice.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ organisation: 'Uni Example' }),
  });
  expect(reg.status).toBe(200);
  const tr = await fetch(`${kmsUrl}/v1/admin/people/alice/trainings/hpc`, {
    method: 'PUT',
    headers: { Authorization: `token ${boss.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      completedAt: '2025-01-01T00:00:00Z',
      expiresAt: '2099-01-01T00:00:00Z',
    }),
  });
  expect(tr.status).toBe(200);
  const trAlice = await fetch(`${kmsUrl}/v1/admin/people/alice/trainings/hpc`, {
    method: 'PUT',
    headers: { Authorization: `token ${alice.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      completedAt: '2025-01-01T00:00:00Z',
      expiresAt: '2099-01-01T00:00:00Z',
    }),
  });
  expect(trAlice.status).toBe(403);
});

test('a made-up token and an untrusted service token are refused', async () => {
  expect((await kmsMe(randomBytes(16).toString('hex'))).status).toBe(401);
  expect((await kmsMe(adminToken)).status).toBe(401);
  const none = await fetch(`${kmsUrl}/v1/me`);
  expect(none.status).toBe(401);
});

test('the trusted ingress service appends audit events, and acts as no person', async () => {
  const post = (token: string) =>
    fetch(`${kmsUrl}/v1/audit/events`, {
      method: 'POST',
      headers: { Authorization: `token ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ events: [{ action: 'ingress.test', object: 'ingress:1' }] }),
    });
  const ok = await post(ingressToken);
  expect(ok.status).toBe(201);
  expect(await ok.json()).toMatchObject({ appended: 1 });
  expect((await post(adminToken)).status).toBe(401);
  const me = await kmsMe(ingressToken);
  expect(me).toMatchObject({ status: 403, body: { error: { reason: 'user_required' } } });
});

test('through the hub proxy under /services/kms/, and still at the root', async () => {
  await hubRequest('POST', '/users', { usernames: ['dave'] });
  const dave = (await hubRequest('POST', '/users/dave/tokens', {
    note: 'kms prefix test',
    expires_in: 600,
  })) as { token: string };
  for (const base of [`${publicUrl}/services/kms`, kmsUrl]) {
    const me = () => fetch(`${base}/v1/me`, { headers: { Authorization: `token ${dave.token}` } });
    // The hub adds the service's proxy route on its own schedule; until then the proxy sends the
    // request to the hub, which answers 404.
    let r = await me();
    for (const deadline = Date.now() + 30_000; r.status === 404 && Date.now() < deadline;) {
      await new Promise((res) => setTimeout(res, 500));
      r = await me();
    }
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ username: 'dave' });
    const h = await fetch(`${base}/healthz`);
    expect(h.status).toBe(200);
  }
  // A client built on the proxied URL works as on the direct one.
  const { KmsClient } = await import('../src/client.js');
  const c = new KmsClient({ baseUrl: `${publicUrl}/services/kms/`, token: dave.token });
  expect((await c.register('Uni Proxy')).organisation).toBe('Uni Proxy');
  expect(await c.myProjects()).toEqual([]);
  const bad = await fetch(`${publicUrl}/services/kms/v1/nope`, {
    headers: { Authorization: `token ${dave.token}` },
  });
  expect(bad.status).toBe(404);
});

test('a revoked token is refused once the short cache expires', async () => {
  await hubRequest('POST', '/users', { usernames: ['carol'] });
  const carol = (await hubRequest('POST', '/users/carol/tokens', {
    note: 'to revoke',
    expires_in: 600,
  })) as {
    token: string;
    id: string;
  };
  expect((await kmsMe(carol.token)).status).toBe(200);
  await hubRequest('DELETE', `/users/carol/tokens/${carol.id}`);
  await new Promise((r) => setTimeout(r, 1200));
  expect((await kmsMe(carol.token)).status).toBe(401);
});

/** Waits until the hub's proxy routes /services/kms/ to the KMS (the hub adds it on its own time). */
async function proxyRoutesKms(): Promise<void> {
  for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
    const r = await fetch(`${publicUrl}/services/kms/healthz`);
    await r.body?.cancel();
    if (r.ok) return;
    await new Promise((res) => setTimeout(res, 300));
  }
  throw new Error('the proxy never routed /services/kms/');
}

const isCallback = (u: URL): boolean => u.pathname === '/services/kms/oauth_callback';

async function hubLogin(
  user: string,
  next: string,
  before?: (ctx: BrowserContext) => Promise<void>,
): Promise<{ ctx: BrowserContext; page: Page }> {
  browser ??= await chromium.launch({
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
  const ctx = await browser.newContext();
  await before?.(ctx);
  const page = await ctx.newPage();
  page.on('request', (r) => visited.push(r.url()));
  await page.goto(`${publicUrl}/hub/login?next=${encodeURIComponent(next)}`);
  await page.fill('#username_input', user);
  await page.fill('#password_input', 'any');
  await page.click('#login_submit');
  return { ctx, page };
}

const cookie = async (ctx: BrowserContext, name: string) =>
  (await ctx.cookies(`${publicUrl}/services/kms/console/`)).find((c) => c.name === name);

let signedInCode = '';
let sessionId = '';

test('the console signs in through the hub OAuth, with no token pasted, and signs out', async () => {
  await proxyRoutesKms();
  await hubRequest('POST', '/users', { usernames: ['erin'] });
  // hub login -> console -> hub authorize -> oauth_callback -> console, signed in as erin.
  const { ctx, page } = await hubLogin('erin', '/services/kms/console/');
  await page.waitForSelector('#view[data-loaded="true"]', { timeout: 30_000 });
  expect(await page.textContent('#who')).toBe('erin');
  expect(new URL(page.url()).pathname).toBe('/services/kms/console/');
  expect(new URL(page.url()).search).toBe('');
  expect(await page.isHidden('#signin')).toBe(true);
  const authorize = new URL(visited.find((u) => u.includes('/hub/api/oauth2/authorize'))!);
  expect(authorize.searchParams.get('client_id')).toBe('service-kms');
  expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
  expect(authorize.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  const callback = new URL(visited.find((u) => isCallback(new URL(u)))!);
  expect(callback.searchParams.get('state')).toBe(authorize.searchParams.get('state'));
  signedInCode = callback.searchParams.get('code')!;

  // The session cookie is HttpOnly and Strict; the page keeps nothing in web storage.
  const session = (await cookie(ctx, 'tre-kms-session'))!;
  expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/services/kms/' });
  sessionId = session.value;
  const xsrf = (await cookie(ctx, 'tre-kms-xsrf'))!;
  expect(xsrf).toMatchObject({ httpOnly: false, path: '/services/kms/console/' });
  expect(await cookie(ctx, 'tre-kms-oauth-state')).toBeUndefined();
  expect(await page.evaluate('[sessionStorage.length, localStorage.length]')).toEqual([0, 0]);
  expect(await page.evaluate('document.cookie')).not.toContain('tre-kms-session');
  await page.waitForSelector('#view[data-view="projects"]');

  // Without the XSRF header the session cookie alone opens nothing; with it, it does.
  const status = (header?: string) =>
    page.evaluate(async (value) => {
      const r = await fetch('/services/kms/v1/me', {
        credentials: 'same-origin',
        headers: value ? { 'X-TRE-XSRF': value } : {},
      });
      return r.status;
    }, header);
  expect(await status()).toBe(403);
  expect(await status('x'.repeat(43))).toBe(403);
  expect(await status(xsrf.value)).toBe(200);

  // Sign out: the session ends on the server, so a copy of the cookie is worth nothing.
  await page.click('#signout');
  await page.waitForSelector('#signin:not([hidden])');
  expect(await page.textContent('#signin-title')).toBe('Signed out');
  expect(await cookie(ctx, 'tre-kms-session')).toBeUndefined();
  const copied = await fetch(`${publicUrl}/services/kms/v1/me`, {
    headers: { Cookie: `tre-kms-session=${sessionId}`, 'X-TRE-XSRF': xsrf.value },
  });
  expect(copied.status).toBe(401);

  // Signing in again is one click (the hub still knows erin); logging out of the hub revokes
  // the token, and the console session ends with it.
  await page.click('#signin-link');
  await page.waitForSelector('#view[data-loaded="true"]');
  expect(await page.textContent('#who')).toBe('erin');
  await page.goto(`${publicUrl}/hub/logout`);
  await new Promise((r) => setTimeout(r, 1200));
  await page.goto(`${publicUrl}/services/kms/console/`);
  await page.waitForSelector('#signin:not([hidden])');
  expect(await page.textContent('#signin-title')).toBe('Not signed in');
  await ctx.close();
}, 120_000);

test('a forged state and a replayed code are refused and open no session', async () => {
  await hubRequest('POST', '/users', { usernames: ['frank'] });
  const { ctx, page } = await hubLogin('frank', '/hub/home');
  await page.waitForURL(/\/hub\/home/);
  // The first two legs by hand (the browser's cookies, no redirects followed) to hold the answer.
  const start = await ctx.request.get(`${publicUrl}/services/kms/console/`, { maxRedirects: 0 });
  expect(start.status()).toBe(302);
  const state = (await cookie(ctx, 'tre-kms-oauth-state'))!;
  expect(state).toMatchObject({ httpOnly: true, sameSite: 'Lax', path: '/services/kms/' });
  const hubAnswer = await ctx.request.get(new URL(start.headers().location!, publicUrl).href, {
    maxRedirects: 0,
  });
  expect(hubAnswer.status()).toBe(302);
  const callback = new URL(hubAnswer.headers().location!, publicUrl);
  expect(isCallback(callback) && callback.searchParams.has('code')).toBe(true);
  const putStateBack = () =>
    ctx.addCookies([{ ...state, expires: Math.floor(Date.now() / 1000) + 300 }]);

  const forged = new URL(callback);
  forged.searchParams.set('state', 'A'.repeat(43));
  const r = await page.goto(forged.href);
  expect(r!.status()).toBe(403);
  expect(await r!.text()).toContain('state does not match');
  expect(await cookie(ctx, 'tre-kms-session')).toBeUndefined();
  // The state cookie went with the refusal: the genuine answer alone no longer signs in.
  expect((await page.goto(callback.href))!.status()).toBe(403);
  expect(await cookie(ctx, 'tre-kms-session')).toBeUndefined();

  // With the state back the genuine answer signs frank in, once.
  await putStateBack();
  await page.goto(callback.href);
  await page.waitForSelector('#view[data-loaded="true"]');
  expect(await page.textContent('#who')).toBe('frank');
  const first = (await cookie(ctx, 'tre-kms-session'))!.value;
  // The same code again, even with this browser's state cookie, is refused by the hub.
  await putStateBack();
  const replay = await page.goto(callback.href);
  expect(replay!.status()).toBe(403);
  expect(await replay!.text()).toContain('refused the sign-in code');
  expect((await cookie(ctx, 'tre-kms-session'))!.value).toBe(first);
  await ctx.close();
}, 60_000);

test('the service logs never contain a token', () => {
  const out = hubOutput();
  expect(out).toContain('tre-kms listening');
  for (const secret of [kmsToken, adminToken]) expect(out.includes(secret)).toBe(false);
  expect(readFileSync(join(dir, 'kms.sqlite')).includes(Buffer.from(kmsToken))).toBe(false);
  // Nor the sign-in's code or session id, in the logs or (the id) in the database.
  expect(signedInCode.length).toBeGreaterThan(10);
  expect(out.includes(signedInCode)).toBe(false);
  expect(out.includes(sessionId)).toBe(false);
  for (const f of ['kms.sqlite', 'kms.sqlite-wal']) {
    if (existsSync(join(dir, f)))
      expect(readFileSync(join(dir, f)).includes(Buffer.from(sessionId))).toBe(false);
  }
  // After the callback no address the browser asked for carries a code or a token.
  const after = visited.filter((u) => !u.includes('/oauth_callback') && !u.includes('/oauth2/'));
  for (const u of after) expect(u).not.toMatch(/[?&](code|token|access_token)=/);
});
