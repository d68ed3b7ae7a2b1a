/**
 * The TRE console's page, script and stylesheet: served from this origin with a strict CSP and
 * no caching, nothing else under /console/, and no token in any address the page builds; console
 * sessions (cookie + XSRF header) without a hub. The sign-in through the hub's OAuth runs against
 * the real JupyterHub in hub.test.ts; the console's pages in Chromium in jupyterlab-tre's e2e.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import fc from 'fast-check';
import { readCookies, stateFor, xsrfFor } from '../src/console-auth.js';
import { loadConfig } from '../src/config.js';
import { startKms, type TestKms } from './helpers.js';

let t: TestKms;
beforeAll(async () => {
  t = await startKms();
});
afterAll(async () => {
  await t?.stop();
});

test('page, script and stylesheet under a strict CSP', async () => {
  for (const [path, type] of [
    ['/console/', 'text/html'],
    ['/console/console.js', 'text/javascript'],
    ['/console/console.css', 'text/css'],
  ] as const) {
    const r = await fetch(t.url + path);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toContain(type);
    const csp = r.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.headers.get('referrer-policy')).toBe('no-referrer');
  }
  const html = await (await fetch(t.url + '/console/')).text();
  // No inline script or style: the CSP would refuse them.
  expect(html).not.toMatch(/<script>(?!<)/);
  expect(html).not.toMatch(/style=/);
  const redirect = await fetch(t.url + '/console', { redirect: 'manual' });
  expect(redirect.status).toBe(301);
});

test('nothing else is served, and the API still needs a token', async () => {
  expect((await fetch(t.url + '/console/../openapi.yaml')).status).not.toBe(500);
  expect((await fetch(t.url + '/console/index.html')).status).toBe(404);
  expect((await fetch(t.url + '/console/secret')).status).toBe(404);
  expect((await fetch(t.url + '/v1/me')).status).toBe(401);
});

test('the script holds no token: no web storage, no token in an address, the XSRF header', () => {
  const src = readFileSync(new URL('../console/src/console.ts', import.meta.url), 'utf8');
  expect(src).not.toMatch(/sessionStorage|localStorage|Authorization/);
  expect(src).not.toMatch(/[?&](token|access_token|code)=/);
  expect(src).toContain("'X-TRE-XSRF': xsrf()");
  expect(src).toContain("credentials: 'same-origin'");
  const html = readFileSync(new URL('../console/index.html', import.meta.url), 'utf8');
  expect(html).not.toMatch(/<input|type="password"/);
});

function cookiesOf(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of res.headers.getSetCookie()) {
    const [pair, ...attrs] = c.split(';');
    const [name, value] = pair!.split('=');
    out[name!] = value!;
    out[`${name!} attrs`] = attrs.map((a) => a.trim()).join('; ');
  }
  return out;
}

test('a session from an API token: cookie plus XSRF header, sign-out ends it on the server', async () => {
  const carol = t.as('carol');
  const token = (carol as unknown as { opts: { token: string } }).opts.token;
  const open = await fetch(`${t.url}/console/session`, {
    method: 'POST',
    headers: { Authorization: `token ${token}` },
  });
  expect(open.status).toBe(201);
  expect(await open.json()).toEqual({ username: 'carol' });
  const c = cookiesOf(open);
  const id = c['tre-kms-session']!;
  expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(c['tre-kms-session attrs']).toMatch(/HttpOnly/);
  expect(c['tre-kms-session attrs']).toMatch(/SameSite=Strict/);
  expect(c['tre-kms-session attrs']).toMatch(/Path=\/(;|$)/);
  expect(c['tre-kms-session attrs']).not.toMatch(/Secure/);
  expect(c['tre-kms-xsrf']).toBe(xsrfFor(id));
  expect(c['tre-kms-xsrf attrs']).toMatch(/Path=\/console\//);
  expect(c['tre-kms-xsrf attrs']).not.toMatch(/HttpOnly/);

  const me = (headers: Record<string, string>) => fetch(`${t.url}/v1/me`, { headers });
  const cookie = `tre-kms-session=${id}`;
  expect((await me({ Cookie: cookie })).status).toBe(403);
  expect((await me({ Cookie: cookie, 'X-TRE-XSRF': xsrfFor('x'.repeat(43)) })).status).toBe(403);
  const ok = await me({ Cookie: cookie, 'X-TRE-XSRF': xsrfFor(id) });
  expect(ok.status).toBe(200);
  expect(await ok.json()).toMatchObject({ username: 'carol' });
  // A made-up session id, or one cookie among others of the name, as a browser may send them.
  expect(
    (await me({ Cookie: `tre-kms-session=${'y'.repeat(43)}`, 'X-TRE-XSRF': 'z' })).status,
  ).toBe(401);
  expect(
    (await me({ Cookie: `a=b; tre-kms-session=bogus; ${cookie}`, 'X-TRE-XSRF': xsrfFor(id) }))
      .status,
  ).toBe(200);
  // The release lane is for API clients; a console session goes through the same checks.
  expect(
    (await fetch(`${t.url}/v1/projects/p/files/f/key`, { headers: { Cookie: cookie } })).status,
  ).toBe(403);
  // The database holds neither the token nor the session id.
  const db = readFileSync(join(t.dir, 'kms.sqlite'));
  const wal = readFileSync(join(t.dir, 'kms.sqlite-wal'));
  for (const secret of [token, id]) {
    expect(db.includes(Buffer.from(secret))).toBe(false);
    expect(wal.includes(Buffer.from(secret))).toBe(false);
  }
  // Sign-out needs the XSRF header too, then the session is gone.
  const signout = (headers: Record<string, string>) =>
    fetch(`${t.url}/console/signout`, { method: 'POST', headers });
  expect((await signout({ Cookie: cookie })).status).toBe(403);
  expect((await me({ Cookie: cookie, 'X-TRE-XSRF': xsrfFor(id) })).status).toBe(200);
  const out = await signout({ Cookie: cookie, 'X-TRE-XSRF': xsrfFor(id) });
  expect(out.status).toBe(204);
  expect(cookiesOf(out)['tre-kms-session']).toBe('');
  expect((await me({ Cookie: cookie, 'X-TRE-XSRF': xsrfFor(id) })).status).toBe(401);
  const audit = t.server.db
    .prepare(
      "SELECT actor, action, object FROM audit_log WHERE action LIKE 'console.%' ORDER BY seq",
    )
    .all();
  expect(audit).toEqual([
    { actor: 'carol', action: 'console.signin', object: 'console:token' },
    { actor: 'carol', action: 'console.signout', object: 'console:session' },
  ]);
});

test('sessions are refused to unknown tokens and services; the console page needs no sign-in here', async () => {
  const post = (auth?: string) =>
    fetch(`${t.url}/console/session`, {
      method: 'POST',
      headers: auth ? { Authorization: auth } : {},
    });
  expect((await post()).status).toBe(401);
  expect((await post('token nope')).status).toBe(401);
  const svc = (t.as('ingress', false, true) as unknown as { opts: { token: string } }).opts.token;
  const r = await post(`token ${svc}`);
  expect(r.status).toBe(403);
  expect(r.headers.getSetCookie()).toEqual([]);
  // Without an OAuth client the page is served and says how to sign in; there is no callback.
  expect((await fetch(`${t.url}/console/`, { redirect: 'manual' })).status).toBe(200);
  const cb = await fetch(`${t.url}/oauth_callback?code=a&state=b`);
  expect(cb.status).toBe(404);
  expect((await fetch(`${t.url}/oauth_callback?code=a&state=b&extra=1`)).status).toBe(400);
});

test('cookie parsing finds every value of a name and nothing else', () => {
  const name = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
  const value = fc.stringMatching(/^[A-Za-z0-9_-]{0,50}$/);
  fc.assert(
    fc.property(fc.array(fc.tuple(name, value), { maxLength: 8 }), name, (pairs, wanted) => {
      const header = pairs.map(([n, v]) => `${n}=${v}`).join('; ');
      expect(readCookies(header, wanted)).toEqual(
        pairs.filter(([n]) => n === wanted).map(([, v]) => v),
      );
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (junk) => {
      expect(Array.isArray(readCookies(junk, 'tre-kms-session'))).toBe(true);
    }),
  );
});

test('state and PKCE values: unguessable from each other, as RFC 7636 wants them', () => {
  const a = stateFor('s'.repeat(43));
  const b = stateFor('t'.repeat(43));
  expect(a.state).not.toBe(b.state);
  expect(a.verifier).toMatch(/^[A-Za-z0-9_-]{43,128}$/);
  expect(a.state).not.toBe(a.verifier);
  expect(a.challenge).not.toBe(a.verifier);
});

test('the OAuth client comes from what the hub hands a managed service', () => {
  const c = loadConfig(undefined, {
    JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
    JUPYTERHUB_API_TOKEN: 'secret',
    JUPYTERHUB_CLIENT_ID: 'service-kms',
    JUPYTERHUB_SERVICE_PREFIX: '/services/kms/',
    JUPYTERHUB_OAUTH_CALLBACK_URL: '/services/kms/oauth_callback',
    JUPYTERHUB_BASE_URL: '/',
    JUPYTERHUB_HOST: '',
  });
  expect(c.hub.oauth).toEqual({
    clientId: 'service-kms',
    authorizeUrl: '/hub/api/oauth2/authorize',
    tokenUrl: 'http://127.0.0.1:8081/hub/api/oauth2/token',
    redirectUri: '/services/kms/oauth_callback',
    https: false,
  });
  const tls = loadConfig(undefined, {
    JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
    JUPYTERHUB_API_TOKEN: 'secret',
    JUPYTERHUB_CLIENT_ID: 'service-kms',
    JUPYTERHUB_PUBLIC_URL: 'https://tre.example.org/services/kms/',
  });
  expect(tls.hub.oauth?.https).toBe(true);
  // No API token, no client secret: no OAuth client.
  expect(
    loadConfig(undefined, {
      JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
      JUPYTERHUB_CLIENT_ID: 'service-kms',
    }).hub.oauth,
  ).toBeUndefined();
  expect(() =>
    loadConfig(undefined, {
      JUPYTERHUB_API_URL: 'http://127.0.0.1:8081/hub/api',
      JUPYTERHUB_API_TOKEN: 'secret',
      JUPYTERHUB_CLIENT_ID: 'service-kms',
      JUPYTERHUB_OAUTH_CALLBACK_URL: '/services/kms/elsewhere',
    }),
  ).toThrow(/oauth_callback/);
});

test('a console session ends when unused for the idle span, and 12 hours after sign-in in any case', async () => {
  const start = t.clock.now;
  const at = (minutes: number) => (t.clock.now = new Date(start.getTime() + minutes * 60_000));
  const rows = (user: string) =>
    (
      t.server.db
        .prepare('SELECT COUNT(*) AS n FROM console_sessions WHERE username = ?')
        .get(user) as { n: number }
    ).n;
  const signIn = async (user: string) => {
    const token = (t.as(user) as unknown as { opts: { token: string } }).opts.token;
    const r = await fetch(`${t.url}/console/session`, {
      method: 'POST',
      headers: { Authorization: `token ${token}` },
    });
    expect(r.status).toBe(201);
    const id = cookiesOf(r)['tre-kms-session']!;
    return () =>
      fetch(`${t.url}/v1/me`, {
        headers: { Cookie: `tre-kms-session=${id}`, 'X-TRE-XSRF': xsrfFor(id) },
      });
  };
  try {
    const me = await signIn('dave');
    // Each use starts the 30 minutes again.
    at(29);
    expect((await me()).status).toBe(200);
    at(58);
    expect((await me()).status).toBe(200);
    at(89);
    const idle = await me();
    expect(idle.status).toBe(401);
    expect(((await idle.json()) as { error: { message: string } }).error.message).toMatch(
      /session has ended/,
    );
    expect(rows('dave')).toBe(1);
    // The next use of any session removes the rows of ended ones.
    const other = await signIn('erin');
    expect(rows('dave')).toBe(0);

    // Used every 25 minutes, a session still ends 12 hours after sign-in.
    let minute = 89;
    let last = 200;
    while (minute < 89 + 12 * 60 + 25) {
      minute += 25;
      at(minute);
      last = (await other()).status;
      if (last !== 200) break;
    }
    expect(last).toBe(401);
    expect(minute).toBeGreaterThanOrEqual(89 + 12 * 60);
  } finally {
    t.clock.now = start;
  }
});

test('the console idle span is a setting of its own, from 1 to 720 minutes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tre-kms-idle-'));
  const file = (text: string) => {
    writeFileSync(
      join(dir, 'kms.yaml'),
      `hub: { apiUrl: 'http://127.0.0.1:8081/hub/api' }\n${text}`,
    );
    return join(dir, 'kms.yaml');
  };
  try {
    expect(loadConfig(file('')).consoleIdleMinutes).toBe(30);
    expect(loadConfig(file('consoleIdleMinutes: 5\n')).consoleIdleMinutes).toBe(5);
    for (const bad of ['0', '721', '1.5', 'soon']) {
      expect(() => loadConfig(file(`consoleIdleMinutes: ${bad}\n`))).toThrow(
        /consoleIdleMinutes must be an integer from 1 to 720/,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
