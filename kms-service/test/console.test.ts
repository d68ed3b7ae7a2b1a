/**
 * The TRE console's page, script and stylesheet: served from this origin with a strict CSP and
 * no caching, nothing else under /console/, and no token in any address the page builds.
 * (The console's behaviour is driven in Chromium by jupyterlab-tre/test/lab.e2e.test.ts.)
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
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

test('the script sends the token in a header only, never in an address', () => {
  const src = readFileSync(new URL('../console/src/console.ts', import.meta.url), 'utf8');
  expect(src).toContain('Authorization: `token ${token}`');
  expect(src).not.toMatch(/[?&](token|access_token)=/);
  expect(src).toContain("credentials: 'omit'");
});
