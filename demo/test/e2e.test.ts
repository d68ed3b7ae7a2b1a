/**
 * The README's run command, end to end with every real part: it starts the TRE in a clean state
 * folder, each demo user logs in through the hub in headless Chromium, the researcher starts a
 * session and opens JupyterLab and the desktop, an egress request is filed and approved by the
 * PI and the data owner, Ctrl-C stops everything without leftovers, and a second start reuses
 * the state. The screenshots it takes are the ones the guides show.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  decryptFile,
  decodePublicKey,
  decryptKeyFile,
  encryptFile,
  HEADER_LEN,
  parseHeader,
  unwrapKey,
  wrapKey,
  type KeyFile,
  type KeyPair,
} from '@tre/crypto';
import { checkFile, KmsClient, type KekView } from '@tre/kms-service';
import {
  CHROMIUM_ARGS,
  ctrlC,
  mountsUnder,
  processesUsing,
  REPO,
  startDemo,
  type RunningDemo,
} from './support/demo.js';
import { allBlocks, documentedFiles, runBlock } from './support/doc-blocks.js';

jest.setTimeout(600_000);

const USERS = ['researcher', 'pi', 'dataowner'] as const;
let demo: RunningDemo;
let browser: Browser;
let logins: Record<string, string>;
let passphrases: Record<string, string>;
const shots = process.env.TRE_UPDATE_SCREENSHOTS
  ? join(REPO, 'docs', 'images')
  : join(REPO, 'demo', 'screenshots');

async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

async function login(user: string, password: string): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1024, height: 640 } });
  const page = await ctx.newPage();
  await page.goto(`${demo.url}hub/login`);
  await page.fill('#username_input', user);
  await page.fill('#password_input', password);
  await page.click('#login_submit');
  await page.waitForLoadState('networkidle');
  return page;
}

const secret = (f: string) => join(demo.state, 'secrets', f);
const kmsUrl = () => `http://127.0.0.1:${demo.port + 3}`;
function kmsAs(user: string): KmsClient {
  return new KmsClient({ baseUrl: kmsUrl(), token: readFileSync(secret(`token-${user}`), 'utf8') });
}
async function kekOf(user: string): Promise<KeyPair> {
  const file = JSON.parse(readFileSync(join(demo.state, 'keys', `${user}.json`), 'utf8'));
  return decryptKeyFile(file as KeyFile, passphrases[user] as string);
}

beforeAll(async () => {
  demo = await startDemo();
  logins = JSON.parse(readFileSync(secret('demo-logins.json'), 'utf8'));
  passphrases = JSON.parse(readFileSync(secret('key-passphrases.json'), 'utf8'));
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

afterAll(async () => {
  await browser?.close();
  if (demo && demo.child.exitCode === null) await ctrlC(demo).catch(() => undefined);
  if (demo && processesUsing(demo.state).length === 0) {
    rmSync(demo.state, { recursive: true, force: true });
  }
});

describe('the README run command', () => {
  test('prints the URL, the ports and a login for each demo user', () => {
    const out = demo.output();
    expect(demo.url).toBe(`http://127.0.0.1:${demo.port}/`);
    for (const u of USERS) {
      expect(out).toContain(`password ${logins[u]}`);
      expect(out).toContain(`key passphrase ${passphrases[u]}`);
    }
    expect(out).toMatch(new RegExp(`KMS ${demo.port + 3}, ingress ${demo.port + 4}`));
    expect(out).toMatch(/synthetic dataset \(200 patients\)/);
    expect(out).toMatch(/confirmed by pi/);
  });

  test('the seed: a consented project, keys wrapped to every member, the dataset confirmed', async () => {
    const view = await kmsAs('pi').project('demo');
    expect(view.state).toBe('active');
    expect(view.members.map((m) => [m.username, m.role]).sort()).toEqual([
      ['dataowner', 'data_owner'],
      ['pi', 'pi'],
      ['researcher', 'researcher'],
    ]);
    for (const u of USERS) {
      const rel = await kmsAs(u).projectKey('demo');
      const priv = await unwrapKey(rel.wrapped!, await kekOf(u), {
        purpose: 'project-key',
        projectId: 'demo',
        epoch: rel.epoch,
      });
      expect(priv.length).toBe(32);
    }
    const res = await fetch(`http://127.0.0.1:${demo.port + 4}/v1/projects/demo/ingress-requests`, {
      headers: { Authorization: `token ${readFileSync(secret('token-pi'), 'utf8')}` },
    });
    const requests = (await res.json()) as Array<{ state: string; uploader?: string }>;
    expect(requests.map((r) => r.state)).toEqual(['confirmed']);
  });

  test('each demo user logs in through the hub; a wrong password is refused', async () => {
    const bad = await login('researcher', 'not-the-password');
    expect(bad.url()).toMatch(/\/hub\/login/);
    expect(await bad.content()).toMatch(/Invalid username or password/);
    await bad.context().close();
    for (const u of USERS) {
      const page = await login(u, logins[u] as string);
      // No server yet: the hub shows the session form, not an error.
      expect(page.url()).toMatch(/\/hub\/spawn/);
      expect(await page.locator('.error').count()).toBe(0);
      await page.locator('#tre-project').waitFor();
      expect(await page.content()).toContain(`user: "${u}"`);
      if (u === 'pi') await shot(page, 'hub-home');
      await page.context().close();
    }
    const first = await browser.newPage({ viewport: { width: 1024, height: 640 } });
    await first.goto(`${demo.url}hub/login`);
    await shot(first, 'hub-login');
    await first.close();
  });

  test('the researcher starts a session and opens JupyterLab and the desktop', async () => {
    const page = await login('researcher', logins.researcher as string);
    await page.goto(`${demo.url}hub/spawn`);
    // The form lists the projects the KMS would start a session for; the seeded one must be there.
    await page.selectOption('#tre-project', 'demo');
    await page.fill('#tre-passphrase', passphrases.researcher as string);
    await shot(page, 'spawn-form');
    await page.click('form input[type="submit"], form button[type="submit"]');
    await page.waitForURL(/\/user\/researcher\/lab/, { timeout: 300_000 });
    await page.locator('.jp-LabShell, #jp-main-dock-panel').first().waitFor({ timeout: 120_000 });
    await page.locator('.jp-Launcher').first().waitFor({ timeout: 120_000 });
    // JupyterLab asks once whether to fetch Jupyter news; a TRE session has no network anyway.
    const noNews = page.getByRole('button', { name: 'No', exact: true });
    if (await noNews.isVisible()) await noNews.click();
    await page.waitForTimeout(1000);
    await shot(page, 'jupyterlab');
    // The desktop proxy takes a hub API token (header, or this cookie for browsers), not the
    // hub's login cookie: a launcher in JupyterLab is meant to set it.
    await page.context().addCookies([
      {
        name: 'tre-desktop-token',
        value: readFileSync(secret('token-researcher'), 'utf8').trim(),
        url: `${demo.url}user/researcher/desktop/`,
      },
    ]);
    await page.goto(`${demo.url}user/researcher/desktop/`);
    await page.locator('body[data-state="connected"]').waitFor({ timeout: 60_000 });
    expect(await page.locator('canvas').count()).toBeGreaterThan(0);
    await page.waitForTimeout(1000);
    await shot(page, 'desktop');
    await page.context().close();
  });

  test('an egress request: filed by the researcher, reviewed and approved by the PI and the data owner, released', async () => {
    const text = 'diagnosis,patients\nE11,34\nI10,31\nN18,29\n';
    const dir = join(demo.state, 'egress-test');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'table.csv'), text);
    const dek = randomBytes(32);
    await encryptFile(dek, join(dir, 'table.csv'), join(dir, 'table.csv.enc'));
    const ct = readFileSync(join(dir, 'table.csv.enc'));
    const fileId = parseHeader(ct.subarray(0, HEADER_LEN)).toString('hex');
    const researcher = kmsAs('researcher');
    const keys = [];
    for (const u of USERS) {
      const kek = (await researcher.listKeks(u)).find((k) => k.current) as KekView;
      keys.push({
        username: u,
        wrapped: await wrapKey(dek, decodePublicKey(kek.publicKey), {
          purpose: 'egress',
          projectId: 'demo',
          fileId,
          recipient: u,
        }),
      });
    }
    const draft = await researcher.createEgress('demo', 'Patients per diagnosis group');
    await researcher.putEgressFiles('demo', draft.id, [
      {
        fileId,
        path: 'outputs/diagnoses.csv',
        size: ct.length,
        sha256: createHash('sha256').update(ct).digest('hex'),
        sdc: checkFile('outputs/diagnoses.csv', text),
        keys,
      },
    ]);
    expect((await researcher.submitEgress('demo', draft.id)).state).toBe('submitted');
    for (const reviewer of ['pi', 'dataowner']) {
      const c = kmsAs(reviewer);
      const k = await c.egressReviewKey('demo', draft.id, fileId);
      const dekSeen = await unwrapKey(k.wrapped, await kekOf(reviewer), {
        purpose: 'egress',
        projectId: 'demo',
        fileId,
        recipient: reviewer,
      });
      await decryptFile(dekSeen, join(dir, 'table.csv.enc'), join(dir, `seen-${reviewer}.csv`));
      expect(readFileSync(join(dir, `seen-${reviewer}.csv`), 'utf8')).toBe(text);
      await c.voteEgress('demo', draft.id, fileId, 'approve');
    }
    expect((await kmsAs('pi').decideEgress('demo', draft.id, 'approve')).state).toBe('approved');
    const released = await researcher.releaseEgress('demo', draft.id);
    expect(released.state).toBe('released');
    expect(released.files.map((f) => f.fileId)).toEqual([fileId]);
  });

  test("the guides' commands marked `sh demo` run against the running demo", () => {
    const blocks = allBlocks().filter((b) => b.kind === 'demo');
    expect(blocks.length).toBeGreaterThan(0);
    for (const b of blocks) {
      const r = runBlock(b, { TRE_DEMO_STATE: demo.state, TRE_DEMO_PORT: String(demo.port) });
      expect({
        where: `${b.file}:${b.line}`,
        status: r.status,
        out: r.status === 0 ? '' : r.out,
      }).toEqual({
        where: `${b.file}:${b.line}`,
        status: 0,
        out: '',
      });
    }
  });

  test('every URL the README and the guides show answers on the demo', async () => {
    const urls = new Set<string>();
    for (const f of documentedFiles()) {
      const text = readFileSync(join(REPO, f), 'utf8');
      for (const m of text.matchAll(/http:\/\/127\.0\.0\.1:(87\d\d)(\/[^\s)`'"<>]*)?/g)) {
        urls.add(`http://127.0.0.1:${demo.port + Number(m[1]) - 8700}${m[2] ?? '/'}`);
      }
    }
    expect(urls.size).toBeGreaterThan(2);
    for (const u of urls) {
      const res = await fetch(u, { redirect: 'manual' });
      await res.body?.cancel();
      expect({ url: u, ok: res.status < 400 }).toEqual({ url: u, ok: true });
    }
  });

  test('Ctrl-C stops everything: no process, no mount, no port left', async () => {
    expect(await ctrlC(demo)).toBe(0);
    expect(demo.output()).toMatch(/tre-demo: stopped/);
    await new Promise((r) => setTimeout(r, 500));
    expect(processesUsing(demo.state)).toEqual([]);
    expect(mountsUnder(demo.state)).toEqual([]);
    const refused = await fetch(demo.url).then(
      () => false,
      () => true,
    );
    expect(refused).toBe(true);
  });

  test('a second start reuses the state and seeds nothing again', async () => {
    const again = await startDemo({ state: demo.state, port: demo.port });
    demo = again;
    const out = again.output();
    expect(out).toMatch(/reusing the state/);
    expect(out).not.toMatch(/proposed by pi|tre upload:|key file for/);
    const page = await login('dataowner', logins.dataowner as string);
    expect(page.url()).toMatch(/\/hub\/(home|spawn)/);
    await page.context().close();
    expect(await ctrlC(again)).toBe(0);
    expect(processesUsing(demo.state)).toEqual([]);
  });
});
