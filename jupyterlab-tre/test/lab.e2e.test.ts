/**
 * The TRE's egress in a real JupyterLab (pip, from the repository's .venv, with jupyterlab_tre
 * installed) and a real kms-service, driven in Debian's Chromium: a researcher sees the
 * disclosure checks of the export folder, files one passing and one failing table, justifies the
 * failing cell and submits; the PI and the data owner review it in the TRE console and approve;
 * the requester obtains the release and decrypts both files with their own key.
 *
 * The KMS authenticates with a fixed token table instead of a hub (kms-service's hub test covers
 * the real hub). Screenshots of every panel and console page: jupyterlab-tre/test-artifacts/.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Browser, Page } from 'playwright-core';
import {
  decryptFile,
  encodePublicKey,
  generateKeyPair,
  unwrapKey,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient } from '@tre/kms-service/client';
import {
  ARTIFACTS,
  HELPER,
  SHOTS,
  consolePage as signIn,
  consoleTab,
  labPage as openLab,
  launchChromium,
  openPanel,
  requireLab,
  startLab,
  type Lab,
} from './harness.js';
import { startKms, type TestKms } from './kms.js';

const P = 'ward-outputs';

const PASSING = 'ward,admitted,discharged\nA,120,98\nB,45,51\n';
const FAILING = 'ward,admitted,discharged\nA,120,98\nB,4,51\n';

let t: TestKms;
let dir: string;
let lab: Lab | undefined;
let browser: Browser;
const people: Record<string, { c: KmsClient; kp: KeyPair; token: string }> = {};

function tokenOf(name: string, admin = false): string {
  return t.token(name, admin);
}

beforeAll(async () => {
  requireLab();
  mkdirSync(SHOTS, { recursive: true });
  t = await startKms();
  dir = mkdtempSync(join(ARTIFACTS, 'run-'));

  for (const name of ['pia', 'dora', 'rex']) {
    const c = await t.onboard(name);
    const kp = await generateKeyPair();
    await c.addKek(encodePublicKey(kp));
    people[name] = { c, kp, token: tokenOf(name) };
  }
  await people.pia!.c.proposeProject({ id: P, title: 'Ward outputs' });
  await people.pia!.c.addMember(P, { username: 'dora', role: 'data_owner' });
  await people.pia!.c.addMember(P, { username: 'rex', role: 'researcher' });
  await people.dora!.c.consent(P);

  const exportDir = join(dir, 'data', P, 'export', 'tables');
  mkdirSync(exportDir, { recursive: true });
  writeFileSync(join(exportDir, 'admissions.csv'), PASSING);
  writeFileSync(join(exportDir, 'small.csv'), FAILING);
  const tokenFile = join(dir, 'rex.token');
  writeFileSync(tokenFile, people.rex!.token, { mode: 0o600 });

  lab = await startLab(join(dir, 'lab'), join(dir, 'data', P), {
    kms_url: t.url,
    token_file: tokenFile,
    project: P,
    data_root: join(dir, 'data'),
    outbox: join(dir, 'outbox'),
    helper: HELPER,
  });
  browser = await launchChromium();
}, 240_000);

afterAll(async () => {
  await browser?.close();
  await lab?.stop();
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const labPage = (): Promise<Page> => openLab(browser, lab!);
const consolePage = (name: string): Promise<Page> =>
  signIn(browser, t.url, name === 'admin' ? tokenOf('admin', true) : people[name]!.token);

test('file in lab, review in the console as PI and data owner, release, decrypt', async () => {
  const page = await labPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  // Projects: the current project with role, consent and window.
  await openPanel(page, 'tre-projects');
  const row = page.locator(`#tre-projects [data-project="${P}"]`);
  await expect(row.textContent()).resolves.toContain('role: researcher');
  await expect(row.textContent()).resolves.toContain('consented');
  await expect(row.textContent()).resolves.toContain('current project');
  await page.screenshot({ path: join(SHOTS, 'lab-projects.png') });

  // Keys: the fingerprint the KMS holds for rex; no key agent in demo mode.
  await openPanel(page, 'tre-keys');
  await page.waitForSelector('#tre-keys [data-fact="fingerprint"]');
  const kid = (await people.rex!.c.me()).kek!.kid;
  await expect(page.locator('#tre-keys [data-fact="fingerprint"]').textContent()).resolves.toBe(
    kid,
  );
  await expect(page.locator('#tre-keys [data-fact="files"]').textContent()).resolves.toBe('2 of 2');
  await page.screenshot({ path: join(SHOTS, 'lab-keys.png') });

  // Egress: the checks before filing.
  await openPanel(page, 'tre-egress');
  const exp = page.locator('#tre-egress [data-section="export"]');
  await exp.locator('[data-file="tables/small.csv"]').waitFor();
  await expect(
    exp.locator('[data-file="tables/admissions.csv"] > [data-verdict]').textContent(),
  ).resolves.toBe('pass');
  await expect(
    exp.locator('[data-file="tables/small.csv"] > [data-verdict]').textContent(),
  ).resolves.toBe('fail');
  await expect(exp.textContent()).resolves.toContain('B/admitted: threshold (count 4 < 10)');
  await page.screenshot({ path: join(SHOTS, 'lab-egress-export.png') });

  await exp.locator('[data-field="title"]').fill('Admissions by ward');
  await exp.locator('[data-action="file"]').click();
  const mine = page.locator('#tre-egress [data-section="mine"] [data-request]');
  await mine.first().waitFor({ timeout: 60_000 });
  await expect(mine.first().getAttribute('data-state')).resolves.toBe('draft');
  const justify = mine.first().locator('[data-justify="B/admitted|threshold"]');
  await justify.fill('ward B is a whole hospital site');
  await justify.locator('xpath=..').locator('[data-action="justify"]').click();
  await mine.first().getByText('justified B/admitted threshold').waitFor();
  await mine.first().locator('[data-action="submit"]').click();
  await page.waitForSelector(
    '#tre-egress [data-section="mine"] [data-request][data-state="submitted"]',
  );
  await page.screenshot({ path: join(SHOTS, 'lab-egress-submitted.png') });

  // Desktop: the panel opens the noVNC page as a lab tab (no desktop runs in demo mode).
  await openPanel(page, 'tre-desktop');
  await page.screenshot({ path: join(SHOTS, 'lab-desktop-panel.png') });
  await page.click('#tre-desktop [data-action="open-desktop"]');
  await page.waitForSelector('#tre-desktop-tab iframe');
  await expect(page.locator('#tre-desktop-tab iframe').getAttribute('src')).resolves.toMatch(
    /\/desktop\/$/,
  );
  expect(errors).toEqual([]);

  const [req] = await people.rex!.c.listEgress(P);
  const id = req!.id;
  const filed = await people.rex!.c.egress(P, id);
  expect(filed.files.map((f) => [f.path, f.sdc.verdict])).toEqual([
    ['tables/admissions.csv', 'pass'],
    ['tables/small.csv', 'fail'],
  ]);

  // The PI and the data owner review in the console.
  for (const name of ['pia', 'dora']) {
    const c = await consolePage(name);
    await consoleTab(c, 'egress');
    const card = c.locator(`[data-request="${id}"]`);
    await expect(card.locator('[data-sdc="tables/small.csv"]').textContent()).resolves.toContain(
      'ward B is a whole hospital site',
    );
    await c.screenshot({ path: join(SHOTS, `console-egress-${name}-before.png`), fullPage: true });
    for (const path of ['tables/admissions.csv', 'tables/small.csv']) {
      await c
        .locator(`[data-request="${id}"] [data-file="${path}"] [data-action="approve-file"]`)
        .click();
      await c.waitForSelector(`#status:has-text("Approved ${path}.")`);
    }
    if (name === 'dora') {
      // Both reviewers' votes are in: the console re-reads the request and shows it reviewed.
      await c.waitForSelector(`[data-request="${id}"][data-state="reviewed"]`, { timeout: 15_000 });
      await c.locator(`[data-request="${id}"] [data-action="decide-approve"]`).click();
      await c.waitForSelector(`[data-request="${id}"][data-state="approved"]`);
    }
    await c.screenshot({ path: join(SHOTS, `console-egress-${name}-after.png`), fullPage: true });
    await c.context().close();
  }

  // Other console pages, for the record and to see they render.
  const pi = await consolePage('pia');
  await consoleTab(pi, 'projects');
  await expect(pi.locator(`[data-project="${P}"]`).textContent()).resolves.toContain(
    'dora: consented',
  );
  await pi.screenshot({ path: join(SHOTS, 'console-projects.png'), fullPage: true });
  await consoleTab(pi, 'ingress');
  await pi.screenshot({ path: join(SHOTS, 'console-ingress.png'), fullPage: true });
  await consoleTab(pi, 'vault');
  await pi.screenshot({ path: join(SHOTS, 'console-vault.png'), fullPage: true });
  await pi.context().close();

  // Release: only the requester; check each ciphertext against the manifest, then decrypt.
  const rel = await people.rex!.c.releaseEgress(P, id);
  const want: Record<string, string> = {
    'tables/admissions.csv': PASSING,
    'tables/small.csv': FAILING,
  };
  for (const f of rel.files) {
    const cipher = join(dir, 'outbox', P, f.fileId);
    const ct = readFileSync(cipher);
    expect(ct.length).toBe(f.size);
    expect(createHash('sha256').update(ct).digest('hex')).toBe(f.sha256);
    const dek = await unwrapKey(f.wrapped, people.rex!.kp, {
      purpose: 'egress',
      projectId: P,
      fileId: f.fileId,
      recipient: 'rex',
    });
    const out = join(dir, `released-${f.fileId}`);
    await decryptFile(dek, cipher, out);
    expect(readFileSync(out, 'utf8')).toBe(want[f.path]);
  }
  expect(Object.keys(want).sort()).toEqual(rel.files.map((f) => f.path).sort());

  // The audit log, verified in the admin's browser, tells the story.
  const admin = await consolePage('admin');
  await consoleTab(admin, 'audit');
  await expect(admin.locator('[data-field="verification"]').getAttribute('data-ok')).resolves.toBe(
    'true',
  );
  const auditText = await admin.locator('[data-audit="entries"]').textContent();
  for (const action of ['egress.submit', 'egress.vote', 'egress.approve', 'egress.release']) {
    expect(auditText).toContain(action);
  }
  await admin.screenshot({ path: join(SHOTS, 'console-audit.png'), fullPage: true });
  await admin.context().close();

  // The user's token never reached the page, and no key or token is in the lab's log.
  const html = await page.content();
  expect(html).not.toContain(people.rex!.token);
  expect(lab!.log()).not.toContain(people.rex!.token);
  await page.context().close();
}, 600_000);
