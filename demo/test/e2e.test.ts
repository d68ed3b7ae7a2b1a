/**
 * The README's run command, end to end with every real part: it starts the TRE in a clean state
 * folder, each demo user logs in through the hub in headless Chromium, the researcher starts a
 * session and opens JupyterLab and the desktop, an egress request is filed and approved by the
 * PI and the data owner, Ctrl-C stops everything without leftovers, and a second start reuses
 * the state. The screenshots it takes are the ones the guides show.
 */
import { afterAll, beforeAll, describe, expect, jest, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { appendFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import {
  decryptKeyFile,
  plainSizeToCipherSize,
  unwrapKey,
  type KeyFile,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient } from '@tre/kms-service';
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

/** What the seed uploads into the project (demo/src/dataset.ts), under cohort/. */
const DATASET_FILES = ['patients.csv', 'lab_values.csv', 'README.txt'];

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  );
}

/**
 * The TRE console as a reviewer finds it: log in to the hub, follow the hub's "TRE console" link
 * and land signed in (the console signs in through the hub's OAuth; no token is made or pasted).
 */
async function openConsole(user: string): Promise<Page> {
  const page = await login(user, logins[user] as string);
  await page.click('#tre-console-link');
  await page.waitForURL(/\/services\/kms\/console\/$/);
  await page.waitForSelector('#view[data-loaded="true"]');
  expect(await page.textContent('#who')).toMatch(new RegExp(`^${user}\\b`));
  return page;
}

const secret = (f: string) => join(demo.state, 'secrets', f);

function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}
const kmsUrl = () => `http://127.0.0.1:${demo.port + 3}`;
function kmsAs(user: string): KmsClient {
  return new KmsClient({ baseUrl: kmsUrl(), token: readFileSync(secret(`token-${user}`), 'utf8') });
}
async function kekOf(user: string): Promise<KeyPair> {
  const file = JSON.parse(readFileSync(join(demo.state, 'keys', `${user}.json`), 'utf8'));
  return decryptKeyFile(file as KeyFile, passphrases[user] as string);
}

/** `tre download` of request `id` as the researcher, outside the TRE; the passphrase on fd 3. */
function treDownload(
  id: number,
  out: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(
    process.execPath,
    [
      join(REPO, 'uploader', 'dist', 'cli.js'),
      'download',
      String(id),
      '--project',
      'demo',
      '--kms',
      kmsUrl(),
      '--ingress',
      `http://127.0.0.1:${demo.port + 4}`,
      '--out',
      out,
      '--key-file',
      join(demo.state, 'keys', 'researcher.json'),
      '--passphrase-fd',
      '3',
      '--token-file',
      secret('token-researcher'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  const fd3 = p.stdio[3] as NodeJS.WritableStream;
  fd3.on('error', () => undefined);
  fd3.end(passphrases.researcher ?? '');
  let stdout = '';
  let stderr = '';
  p.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => p.once('exit', (code) => resolve({ code, stdout, stderr })));
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
    // The seeded dataset, decrypted by trefs beside the container, in the lab's file browser.
    const browserItem = (name: string) =>
      page.locator(`.jp-DirListing-item[title^="Name: ${name}"]`).first();
    await browserItem('cohort').waitFor({ timeout: 60_000 });
    await browserItem('cohort').dblclick();
    for (const f of DATASET_FILES) await browserItem(f).waitFor({ timeout: 30_000 });
    await browserItem('README.txt').dblclick();
    // The editor shows up before its text has loaded: wait for the text itself.
    await page
      .locator('.jp-FileEditor .cm-content')
      .filter({ hasText: 'Synthetic demo dataset of the TRE.' })
      .first()
      .waitFor({ timeout: 60_000 });
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

  test("/data/demo is the ingress's cipher tree: the session reads the plaintext, the disk holds ciphertext only", async () => {
    const token = readFileSync(secret('token-researcher'), 'utf8').trim();
    const plain: Record<string, Buffer> = {};
    for (const f of DATASET_FILES) {
      const res = await fetch(
        `${demo.url}user/researcher/api/contents/cohort/${f}?content=1&format=base64&type=file`,
        {
          headers: { Authorization: `token ${token}` },
        },
      );
      expect(res.status).toBe(200);
      plain[f] = Buffer.from(((await res.json()) as { content: string }).content, 'base64');
      // What the data owner uploaded (the generator is seeded: the same files every time).
      expect(plain[f]).toEqual(readFileSync(join(demo.state, 'dataset', 'cohort', f)));
    }
    const files = walk(join(demo.state, 'ingress', 'projects', 'demo', 'cipher'));
    const contents = files.filter((f) => !f.endsWith('gocryptfs.diriv'));
    expect(contents.length).toBeGreaterThanOrEqual(DATASET_FILES.length);
    const names = ['cohort', ...DATASET_FILES];
    for (const f of files) {
      for (const n of names) expect(f.split('/')).not.toContain(n);
      const ct = readFileSync(f);
      if (ct.length === 0) continue;
      if (f.endsWith('gocryptfs.diriv')) {
        expect(ct.length).toBe(16);
        continue;
      }
      // gocryptfs v2 files: an 18-byte header (version 2, file ID), then 4 KiB blocks each
      // with a 16-byte nonce and tag: no plaintext survives, not even a line of it.
      expect(ct.readUInt16BE(0)).toBe(2);
      for (const p of Object.values(plain)) {
        for (const line of p.toString('utf8').split('\n').slice(0, 20)) {
          if (line.length >= 8) expect(ct.includes(Buffer.from(line))).toBe(false);
        }
      }
    }
    const sizes = contents.map((f) => statSync(f).size).sort((a, b) => a - b);
    for (const p of Object.values(plain)) {
      expect(sizes).toContain(plainSizeToCipherSize(p.length));
    }
  });

  test('egress in the lab: the researcher files in the Egress panel, the PI and the data owner approve in the TRE console', async () => {
    const token = readFileSync(secret('token-researcher'), 'utf8').trim();
    // An output of the analysis: patients per diagnosis group, from the decrypted dataset.
    const patients = readFileSync(join(demo.state, 'dataset', 'cohort', 'patients.csv'), 'utf8');
    const counts = new Map<string, number>();
    for (const row of patients.trim().split('\n').slice(1)) {
      const dx = row.split(',')[4] as string;
      counts.set(dx, (counts.get(dx) ?? 0) + 1);
    }
    const table =
      ['diagnosis,patients', ...[...counts].sort().map(([d, n]) => `${d},${n}`)].join('\n') + '\n';
    const contents = `${demo.url}user/researcher/api/contents`;
    const put = (path: string, body: unknown) =>
      fetch(`${contents}/${path}`, {
        method: 'PUT',
        headers: { Authorization: `token ${token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    expect((await put('export', { type: 'directory' })).status).toBeLessThan(300);
    expect(
      (await put('export/diagnoses.csv', { type: 'file', format: 'text', content: table })).status,
    ).toBeLessThan(300);

    const page = await login('researcher', logins.researcher as string);
    await page.goto(`${demo.url}user/researcher/lab`);
    await page.waitForSelector('#tre-projects[data-loaded="true"]', {
      state: 'attached',
      timeout: 120_000,
    });
    const noNews = page.getByRole('button', { name: 'No', exact: true });
    if (await noNews.isVisible()) await noNews.click();
    const panel = page.locator('#tre-egress');
    if (!(await panel.isVisible()))
      await page.locator('.jp-SideBar [data-id="tre-egress"]').click();
    await panel.waitFor({ state: 'visible' });
    const exp = panel.locator('[data-section="export"]');
    const row = exp.locator('[data-file="export/diagnoses.csv"]');
    await row.waitFor({ timeout: 60_000 });
    await expect(row.locator('> [data-verdict]').textContent()).resolves.toBe('pass');
    await exp.locator('[data-field="title"]').fill('Patients per diagnosis group');
    await exp.locator('[data-action="file"]').click();
    const mine = panel.locator('[data-section="mine"] [data-request]');
    await mine.first().waitFor({ timeout: 60_000 });
    await expect(mine.first().getAttribute('data-state')).resolves.toBe('draft');
    // Filed through trefs's key agent: the file is frozen in the session's mount of the project
    // tree, for the session (its contents API) and for anyone on the node.
    const refused = await put('export/diagnoses.csv', {
      type: 'file',
      format: 'text',
      content: 'diagnosis,patients\nX,1\n',
    });
    expect(refused.status).toBeGreaterThanOrEqual(400);
    const mount = mountsUnder(demo.state)
      .map((l) => l.split(' ')[1] as string)
      .find((m) => m.endsWith('/data/demo'));
    expect(mount).toBeDefined();
    const inMount = join(mount!, 'export', 'diagnoses.csv');
    for (const change of [
      () => writeFile(inMount, 'diagnosis,patients\nX,1\n'),
      () => appendFile(inMount, 'X,1\n'),
      () => rm(inMount),
    ]) {
      await expect(change()).rejects.toMatchObject({
        code: expect.stringMatching(/^(EROFS|EACCES|EPERM)$/),
      });
    }
    expect(readFileSync(inMount, 'utf8')).toBe(table);
    await mine.first().locator('[data-action="submit"]').click();
    await panel
      .locator('[data-section="mine"] [data-request][data-state="submitted"]')
      .waitFor({ timeout: 60_000 });
    await shot(page, 'lab-egress');
    await page.context().close();

    const researcher = kmsAs('researcher');
    const [req] = await researcher.listEgress('demo');
    const id = req!.id;
    expect((await researcher.egress('demo', id)).files.map((f) => [f.path, f.sdc.verdict])).toEqual(
      [['export/diagnoses.csv', 'pass']],
    );

    for (const reviewer of ['pi', 'dataowner'] as const) {
      const c = await openConsole(reviewer);
      await c.click('nav button[data-tab="egress"]');
      await c.waitForSelector('#view[data-view="egress"][data-loaded="true"]');
      const card = c.locator(`[data-request="${id}"]`);
      await card.locator('[data-file="export/diagnoses.csv"] [data-action="approve-file"]').click();
      await c.waitForSelector('#status:has-text("Approved export/diagnoses.csv.")');
      if (reviewer === 'dataowner') {
        await c.waitForSelector(`[data-request="${id}"][data-state="reviewed"]`, {
          timeout: 15_000,
        });
        await shot(c, 'console-egress');
        await card.locator('[data-action="decide-approve"]').click();
        await c.waitForSelector(`[data-request="${id}"][data-state="approved"]`);
      }
      await c.context().close();
    }

    // The release goes to the requester only, who downloads it with the real `tre download`
    // outside the TRE: the ingress serves the frozen file in the project's tree (no copy), so
    // the manifest's SHA-256 is that stored file's, and it decrypts to the filed table.
    const released = await researcher.releaseEgress('demo', id);
    expect(released.state).toBe('released');
    const [f] = released.files;
    const stored = walk(join(demo.state, 'ingress', 'projects', 'demo', 'cipher')).filter((p) => {
      const head = readFileSync(p).subarray(0, 18);
      return head.length === 18 && head.subarray(2).toString('hex') === f!.fileId;
    });
    expect(stored).toHaveLength(1);
    expect(createHash('sha256').update(readFileSync(stored[0]!)).digest('hex')).toBe(f!.sha256);
    expect(existsSync(join(mount!, 'egress-outbox'))).toBe(false);
    const out = join(demo.state, 'egress-test');
    const dl = await treDownload(id, out);
    expect({ code: dl.code, stderr: dl.stderr }).toEqual({ code: 0, stderr: '' });
    expect(readFileSync(join(out, 'export', 'diagnoses.csv'), 'utf8')).toBe(table);
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

  test('a second start reuses the state; after a kill -9 the next start stops what was left and comes up', async () => {
    const again = await startDemo({ state: demo.state, port: demo.port });
    demo = again;
    const out = again.output();
    expect(out).toMatch(/reusing the state/);
    expect(out).not.toMatch(/proposed by pi|tre upload:|key file for/);
    const page = await login('dataowner', logins.dataowner as string);
    expect(page.url()).toMatch(/\/hub\/(home|spawn)/);
    // The TRE console is in the hub's navigation on every page.
    await expect(page.locator('#tre-console-link').getAttribute('href')).resolves.toBe(
      '/services/kms/console/',
    );
    await page.context().close();

    // A running session, so that its job, its container and its trefs mount are left too.
    const api = `http://127.0.0.1:${demo.port + 1}/hub/api`;
    const admin = {
      Authorization: `token ${readFileSync(secret('demo-service-token'), 'utf8').trim()}`,
    };
    const started = await fetch(`${api}/users/researcher/server`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ project: 'demo', passphrase: passphrases.researcher }),
    });
    expect([201, 202]).toContain(started.status);
    const deadline = Date.now() + 240_000;
    for (let ready = false; !ready && Date.now() < deadline;) {
      const u = (await (await fetch(`${api}/users/researcher`, { headers: admin })).json()) as {
        servers?: Record<string, { ready?: boolean }>;
      };
      ready = u.servers?.['']?.ready === true;
      if (!ready) await new Promise((r) => setTimeout(r, 1000));
    }
    expect(mountsUnder(demo.state).length).toBe(1);

    // Every process of this run, by pid and start time (a pid alone may be reused later).
    const pidFile = JSON.parse(readFileSync(join(demo.state, 'pids.json'), 'utf8')) as {
      demo: { pid: number };
      children: Array<{ name: string; pid: number }>;
    };
    expect(pidFile.children.map((c) => c.name)).toEqual(
      expect.arrayContaining(['ingress', 'bridge', 'jupyterhub', 'kms']),
    );
    const before = processesUsing(demo.state).map((l) => {
      const pid = Number(l.split(' ')[0]);
      return { pid, start: startTime(pid), line: l };
    });
    expect(before.length).toBeGreaterThan(5);
    process.kill(pidFile.demo.pid, 'SIGKILL');
    await again.exited;

    // The machine is set up already: start tre-demo itself, as the README's command ends up doing.
    const third = await startDemo({ state: demo.state, port: demo.port, runLocal: true });
    demo = third;
    expect(third.output()).toMatch(/reusing the state/);
    const stale = before.filter((p) => p.start !== null && startTime(p.pid) === p.start);
    expect(stale.map((p) => p.line)).toEqual([]);
    expect(mountsUnder(demo.state)).toEqual([]);
    const res = await fetch(`${third.url}hub/login`);
    expect(res.status).toBe(200);
    expect(await ctrlC(third)).toBe(0);
    expect(processesUsing(demo.state)).toEqual([]);
  });
});
