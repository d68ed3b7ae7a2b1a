/**
 * Filing from a real session, driven in Debian's Chromium: the project's cipher tree mounted by
 * the real trefs (keys from a running kms-service, the key agent on its unix socket, as the job
 * agent runs it beside the container), a real JupyterLab with jupyterlab_tre whose data root is
 * that mount, the real ingress service. A researcher files one passing and one failing table;
 * the files become read-only in the mount; the data owner opens a filed file through their own
 * trefs key agent (review-key); the PI and the data owner approve in the TRE console; the
 * requester runs the real `tre download` outside the TRE: refused before release (exit 8), the
 * files byte-identical after it, a tampered ciphertext refused (exit 6), a wrong key file
 * refused (exit 7).
 *
 * What it does not run: the job agent, bubblewrap and the hub (the bridge's e2e starts those
 * with trefs; here jupyter-server and trefs are started directly, the hub replaced by the KMS's
 * token table).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  openSync,
  readSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import type { Browser } from 'playwright-core';
import {
  encodePublicKey,
  encryptKeyFile,
  generateKeyPair,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service/client';
import {
  ARTIFACTS,
  HELPER,
  ROOT,
  SHOTS,
  consolePage,
  consoleTab,
  labPage,
  launchChromium,
  openPanel,
  requireLab,
  startLab,
  type Lab,
} from './harness.js';
import { startKms, type TestKms } from './kms.js';

const TREFS = join(ROOT, 'trefs', 'dist', 'cli.js');
const TRE = join(ROOT, 'uploader', 'dist', 'cli.js');
const P = 'ward-session';
const PASS = 'a passphrase for the test only';
const PASSING = 'ward,admitted,discharged\nA,120,98\nB,45,51\n';
const FAILING = 'ward,admitted,discharged\nA,120,98\nB,4,51\n';

let t: TestKms;
let dir: string;
let lab: Lab | undefined;
let browser: Browser | undefined;
let ingressUrl = '';
const children = new Set<ChildProcess>();
const mounts: Array<{ child: ChildProcess; mnt: string }> = [];
const people: Record<string, { c: KmsClient; kp: KeyPair; token: string; keyFile: string }> = {};

function node(args: string[], fd3 = '') {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  children.add(proc);
  const pipe = proc.stdio[3] as NodeJS.WritableStream;
  pipe.on('error', () => undefined);
  pipe.end(fd3);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) =>
    proc.once('exit', (code) => res({ code, stdout, stderr })),
  );
  return { proc, done, out: () => stdout, err: () => stderr };
}

/** `trefs mount` of the project's cipher tree as `name`, with the key agent on `socket`. */
async function mountAs(name: string, cipher: string, mnt: string, socket: string): Promise<void> {
  mkdirSync(mnt, { recursive: true });
  const kp = people[name]!.kp;
  const key = JSON.stringify({
    kem: kp.kem,
    privateKey: Buffer.from(kp.privateKey).toString('base64url'),
    kmsToken: people[name]!.token,
  });
  const r = node(
    [
      TREFS,
      'mount',
      cipher,
      mnt,
      '--project',
      P,
      '--kms',
      t.url,
      '--key-fd',
      '3',
      '--key-agent',
      socket,
    ],
    key,
  );
  await new Promise<void>((res, rej) => {
    r.proc.stdout!.on('data', () => r.out().includes('trefs: mounted') && res());
    r.proc.once('exit', (code) => rej(new Error(`trefs exited with ${code}: ${r.err()}`)));
  });
  mounts.push({ child: r.proc, mnt });
}

async function startIngress(root: string): Promise<string> {
  writeFileSync(join(dir, 'ingress.token'), t.token('ingress') + '\n', { mode: 0o600 });
  const r = node([
    TRE,
    'ingress',
    'serve',
    '--root',
    root,
    '--port',
    '0',
    '--kms',
    t.url,
    '--service-token-file',
    join(dir, 'ingress.token'),
  ]);
  const port = await new Promise<number>((res, rej) => {
    r.proc.stdout!.on('data', () => {
      const m = /listening on [^:]+:(\d+)/.exec(r.out());
      if (m) res(Number(m[1]));
    });
    r.proc.once('exit', (code) => rej(new Error(`ingress exited ${code}: ${r.err()}`)));
  });
  return `http://127.0.0.1:${port}`;
}

function download(name: string, id: number, out: string, keyFile = people[name]!.keyFile) {
  return node(
    [
      TRE,
      'download',
      String(id),
      '--project',
      P,
      '--kms',
      t.url,
      '--ingress',
      ingressUrl,
      '--out',
      out,
      '--key-file',
      keyFile,
      '--passphrase-fd',
      '3',
      '--token-file',
      join(dir, `${name}.token`),
    ],
    PASS,
  ).done;
}

/** Every file below `root`, relative path -> bytes. */
function tree(root: string, rel = ''): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const name of readdirSync(join(root, rel))) {
    const r = rel === '' ? name : `${rel}/${name}`;
    if (statSync(join(root, r)).isDirectory()) Object.assign(out, tree(root, r));
    else out[r] = readFileSync(join(root, r));
  }
  return out;
}

beforeAll(async () => {
  requireLab();
  mkdirSync(SHOTS, { recursive: true });
  t = await startKms({ services: ['ingress'] });
  dir = mkdtempSync(join(ARTIFACTS, 'session-'));
  for (const name of ['pia', 'dora', 'rex']) {
    const c = await t.onboard(name);
    const kp = await generateKeyPair();
    await c.addKek(encodePublicKey(kp));
    const keyFile = join(dir, `${name}.kek`);
    writeFileSync(keyFile, JSON.stringify(await encryptKeyFile(kp, PASS)), { mode: 0o600 });
    writeFileSync(join(dir, `${name}.token`), t.token(name) + '\n', { mode: 0o600 });
    people[name] = { c, kp, token: t.token(name), keyFile };
  }
  const pia = people.pia!.c;
  await pia.proposeProject({ id: P, title: 'Ward outputs in a session' });
  await pia.addMember(P, { username: 'dora', role: 'data_owner' });
  await pia.addMember(P, { username: 'rex', role: 'researcher' });
  await people.dora!.c.consent(P);
  const projectKp = await generateKeyPair();
  await pia.publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(randomBytes(32), projectKp, { purpose: 'volume-key', projectId: P }),
    wraps: await Promise.all(
      ['pia', 'dora', 'rex'].map(async (username) => ({
        username,
        wrapped: await wrapKey(projectKp.privateKey, people[username]!.kp, {
          purpose: 'project-key',
          projectId: P,
          epoch: 1,
        }),
      })),
    ),
  });

  // The ingress serves the project tree that trefs mounts: <root>/projects/<p>/cipher.
  const ingressRoot = join(dir, 'ingress');
  const cipher = join(ingressRoot, 'projects', P, 'cipher');
  mkdirSync(cipher, { recursive: true });
  ingressUrl = await startIngress(ingressRoot);
  await mountAs('rex', cipher, join(dir, 'rex', 'data', P), join(dir, 'rex', 'key-agent.sock'));
  await mountAs('dora', cipher, join(dir, 'dora', 'data', P), join(dir, 'dora', 'key-agent.sock'));
  const exportDir = join(dir, 'rex', 'data', P, 'export', 'tables');
  mkdirSync(exportDir, { recursive: true });
  await writeFile(join(exportDir, 'admissions.csv'), PASSING);
  await writeFile(join(exportDir, 'small.csv'), FAILING);

  lab = await startLab(join(dir, 'lab'), join(dir, 'rex', 'data', P), {
    kms_url: t.url,
    token_file: join(dir, 'rex.token'),
    project: P,
    data_root: join(dir, 'rex', 'data'),
    key_agent_socket: join(dir, 'rex', 'key-agent.sock'),
    helper: HELPER,
  });
  browser = await launchChromium();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await lab?.stop();
  for (const m of mounts.reverse()) {
    if (m.child.exitCode === null) {
      const exited = new Promise((r) => m.child.once('exit', r));
      m.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
  }
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await t?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

test('file from a session: frozen in trefs, opened by a reviewer, released, tre download', async () => {
  const page = await labPage(browser!, lab!);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  // Keys: this session holds the key through trefs's key agent.
  await openPanel(page, 'tre-keys');
  await page.waitForSelector('#tre-keys [data-fact="fingerprint"]');
  await expect(page.locator('#tre-keys').textContent()).resolves.toContain('unlocked');
  await page.screenshot({ path: join(SHOTS, 'session-keys.png') });

  // Egress: the checks on the plaintext through trefs, named by their path in the project.
  await openPanel(page, 'tre-egress');
  const exp = page.locator('#tre-egress [data-section="export"]');
  await exp.locator('[data-file="export/tables/small.csv"]').waitFor({ timeout: 60_000 });
  await expect(
    exp.locator('[data-file="export/tables/small.csv"] > [data-verdict]').textContent(),
  ).resolves.toBe('fail');
  await page.screenshot({ path: join(SHOTS, 'session-egress-export.png') });
  await exp.locator('[data-field="title"]').fill('Admissions by ward');
  await exp.locator('[data-action="file"]').click();
  const mine = page.locator('#tre-egress [data-section="mine"] [data-request]');
  await mine.first().waitFor({ timeout: 60_000 });
  await expect(mine.first().getAttribute('data-state')).resolves.toBe('draft');

  // Filed means frozen: the session can no longer change, replace or remove the files.
  const small = join(dir, 'rex', 'data', P, 'export', 'tables', 'small.csv');
  for (const change of [
    () => writeFile(small, 'ward,n\nB,1\n'),
    () => writeFile(small, 'x', { flag: 'a' }),
    () => import('node:fs/promises').then((f) => f.rm(small)),
  ]) {
    await expect(change()).rejects.toMatchObject({
      code: expect.stringMatching(/^(EROFS|EACCES|EPERM)$/),
    });
  }
  expect(readFileSync(small, 'utf8')).toBe(FAILING);

  // A draft's freeze can be lifted and its files edited: the submit then refuses (409) until the
  // export folder is filed again, so reviewers never get a file other than the filed one.
  // jupyter-server wants its XSRF cookie echoed on a POST, as the page does.
  const home = await fetch(`${lab!.url}/lab`, {
    headers: { Authorization: `token ${lab!.token}` },
  });
  await home.body?.cancel();
  const cookies = home.headers.getSetCookie().map((c) => c.split(';')[0] as string);
  const xsrf = cookies.find((c) => c.startsWith('_xsrf='))?.slice('_xsrf='.length) ?? '';
  const labPost = async (path: string, body: object) => {
    const r = await fetch(`${lab!.url}/tre/api/${path}`, {
      method: 'POST',
      headers: {
        Authorization: `token ${lab!.token}`,
        'Content-Type': 'application/json',
        Cookie: cookies.join('; '),
        'X-XSRFToken': xsrf,
      },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  const [draft] = await people.rex!.c.listEgress(P);
  const lifted = await labPost('egress/lift', { requestId: draft!.id });
  expect(lifted).toMatchObject({ status: 200, body: { lifted: true } });
  await writeFile(small, 'ward,admitted,discharged\nA,120,98\nB,14,51\n');
  const stale = await labPost(`kms/v1/projects/${P}/egress/${draft!.id}/submit`, {});
  expect(stale.status).toBe(409);
  expect(stale.body.error).toMatchObject({ code: 'changed_since_filing' });
  expect(JSON.stringify(stale.body)).toMatch(/export\/tables\/small\.csv changed.*refile/);
  expect((await people.rex!.c.egress(P, draft!.id)).state).toBe('draft');
  await writeFile(small, FAILING);
  expect((await labPost('egress', { requestId: draft!.id })).status).toBe(200);
  // The panel shows the refiled files (a rewritten file has a new file ID).
  await page.reload();
  await openPanel(page, 'tre-egress');
  await mine.first().waitFor({ timeout: 60_000 });
  await expect(writeFile(small, 'x', { flag: 'a' })).rejects.toMatchObject({
    code: expect.stringMatching(/^(EROFS|EACCES|EPERM)$/),
  });

  const justify = mine.first().locator('[data-justify="B/admitted|threshold"]');
  await justify.fill('ward B is a whole hospital site');
  await justify.locator('xpath=..').locator('[data-action="justify"]').click();
  await mine.first().getByText('justified B/admitted threshold').waitFor();
  await mine.first().locator('[data-action="submit"]').click();
  await page.waitForSelector(
    '#tre-egress [data-section="mine"] [data-request][data-state="submitted"]',
  );
  await page.screenshot({ path: join(SHOTS, 'session-egress-submitted.png') });
  expect(errors).toEqual([]);

  const [req] = await people.rex!.c.listEgress(P);
  const id = req!.id;
  const filed = await people.rex!.c.egress(P, id);
  expect(filed.files.map((f) => [f.path, f.sdc.verdict])).toEqual([
    ['export/tables/admissions.csv', 'pass'],
    ['export/tables/small.csv', 'fail'],
  ]);

  // The data owner opens a filed file in their own session: their key agent opens the egress
  // key, the file must be the filed one.
  const opened = await runHelper('review', {
    project: P,
    keyAgent: join(dir, 'dora', 'key-agent.sock'),
    mountDir: join(dir, 'dora', 'data', P),
    requestId: id,
    fileId: filed.files[1]!.fileId,
  });
  expect(opened).toEqual({
    code: 0,
    out: {
      path: 'export/tables/small.csv',
      size: filed.files[1]!.size,
      verified: true,
      text: FAILING,
    },
  });

  // Before release `tre download` refuses (exit 8) and writes nothing.
  const early = await download('rex', id, join(dir, 'early'));
  expect(early.code).toBe(8);

  for (const name of ['pia', 'dora']) {
    const c = await consolePage(browser!, t.url, people[name]!.token);
    await consoleTab(c, 'egress');
    for (const path of ['export/tables/admissions.csv', 'export/tables/small.csv']) {
      await c
        .locator(`[data-request="${id}"] [data-file="${path}"] [data-action="approve-file"]`)
        .click();
      await c.waitForSelector(`#status:has-text("Approved ${path}.")`);
    }
    if (name === 'dora') {
      await c.waitForSelector(`[data-request="${id}"][data-state="reviewed"]`, { timeout: 15_000 });
      await c.locator(`[data-request="${id}"] [data-action="decide-approve"]`).click();
      await c.waitForSelector(`[data-request="${id}"][data-state="approved"]`);
    }
    await c.screenshot({ path: join(SHOTS, `session-console-${name}.png`), fullPage: true });
    await c.context().close();
  }
  await people.rex!.c.releaseEgress(P, id);

  // Outside the TRE: the real CLI, the ciphertext from the project tree through the ingress.
  const out = join(dir, 'released');
  const ok = await download('rex', id, out);
  expect({ code: ok.code, stderr: ok.stderr }).toEqual({ code: 0, stderr: '' });
  expect(tree(out)).toEqual({
    'export/tables/admissions.csv': Buffer.from(PASSING),
    'export/tables/small.csv': Buffer.from(FAILING),
  });

  // A wrong key file: exit 7, nothing written.
  const wrong = await download('rex', id, join(dir, 'wrong-key'), people.dora!.keyFile);
  expect(wrong.code).toBe(7);

  // One flipped ciphertext byte in the stored tree: exit 6 (hash mismatch), nothing written.
  const stored = cipherFileOf(
    join(dir, 'ingress', 'projects', P, 'cipher'),
    filed.files[0]!.fileId,
  );
  flipByte(stored, 100);
  try {
    const bad = await download('rex', id, join(dir, 'tampered'));
    expect(bad.code).toBe(6);
    expect(() => readdirSync(join(dir, 'tampered', 'export', 'tables'))).not.toThrow();
    expect(readdirSync(join(dir, 'tampered', 'export', 'tables'))).not.toContain('admissions.csv');
  } finally {
    flipByte(stored, 100);
  }

  const html = await page.content();
  expect(html).not.toContain(people.rex!.token);
  expect(lab!.log()).not.toContain(people.rex!.token);
  await page.context().close();
}, 600_000);

async function runHelper(
  cmd: string,
  input: object,
): Promise<{ code: number | null; out: unknown }> {
  const p = spawn(HELPER[0]!, [...HELPER.slice(1), cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stdin.end(JSON.stringify(input));
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  return { code, out: out.trim() ? JSON.parse(out) : null };
}

/** The stored file whose gocryptfs header carries `fileId` (searched below the cipher root). */
function cipherFileOf(root: string, fileId: string): string {
  const walk = (d: string): string | undefined => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) {
        const f = walk(p);
        if (f) return f;
      } else if (st.size >= 18) {
        const fd = openSync(p, 'r');
        const head = Buffer.alloc(18);
        readSync(fd, head, 0, 18, 0);
        closeSync(fd);
        if (head.subarray(2).toString('hex') === fileId) return p;
      }
    }
    return undefined;
  };
  const found = walk(root);
  if (!found) throw new Error(`no stored file carries the file ID ${fileId}`);
  return found;
}

function flipByte(path: string, at: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] = (b[0] as number) ^ 0xff;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
}
