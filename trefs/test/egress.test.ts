/**
 * The key agent's egress and grant operations against a real trefs FUSE mount (the daemon as
 * its own process) and a real kms-service over HTTP (real SQLite; the hub replaced by a token
 * table): grants completed with the project key trefs holds, which the newcomer then opens; a
 * filed folder frozen against every kind of change, across a remount and in another member's
 * mount of the same tree, with a manifest that matches the ciphertext bytes; the freeze lifted
 * only once the request is back with the requester; review keys only for the caller's own
 * wrap; bad bodies refused with a message and nothing changed.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFile,
  chmod,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  rename,
  rm,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import {
  decodePublicKey,
  decryptFile,
  encodePublicKey,
  encryptKeyFile,
  generateKeyPair,
  parseHeader,
  publicKeyFromPrivate,
  unwrapKey,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient, KmsServer, loadConfig } from '@tre/kms-service';
import { checkFile } from '@tre/kms-service/sdc';
import { projectKeyContext, volumeKeyContext } from '@tre/crypto';
import { CLI, requireFuse, stopDaemon, type Daemon } from './helpers.js';

const P = 'trefs-egress';
const TRE = resolve('..', 'uploader', 'dist', 'cli.js');
const PASS = 'a passphrase for the test only';
const DAY = 24 * 3600 * 1000;

class TokenTable {
  readonly users = new Map<string, { name: string; admin: boolean; service?: boolean }>();
  add(name: string, admin = false, service = false): string {
    const token = `tok-${name}-${randomBytes(8).toString('hex')}`;
    this.users.set(token, { name, admin, ...(service ? { service } : {}) });
    return token;
  }
  async resolve(token: string) {
    return this.users.get(token) ?? null;
  }
}

interface Person {
  name: string;
  token: string;
  c: KmsClient;
  kek: KeyPair;
}

let base: string;
let server: KmsServer;
const hub = new TokenTable();
let admin: KmsClient;
let pi: Person;
let owner: Person;
let rex: Person;
let rita: Person;
let projectKp: KeyPair;
const daemons: Array<{ d: Daemon; mnt: string }> = [];
const children: ChildProcess[] = [];

async function person(name: string): Promise<Person> {
  const token = hub.add(name);
  const c = new KmsClient({ baseUrl: server.url, token });
  await c.register('Uni Example');
  await c.acceptAgreement('2025-1');
  const now = Date.now();
  for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
    await admin.recordTraining(
      name,
      kind,
      new Date(now - DAY).toISOString(),
      new Date(now + 365 * DAY).toISOString(),
    );
  }
  const kek = await generateKeyPair('x25519');
  await c.addKek(encodePublicKey(kek));
  return { name, token, c, kek };
}

function keyJson(p: Person): string {
  return JSON.stringify({
    kem: p.kek.kem,
    privateKey: Buffer.from(p.kek.privateKey).toString('base64url'),
    kmsToken: p.token,
  });
}

async function mount(who: Person, cipher: string, mnt: string, sock: string): Promise<Daemon> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'mount',
      cipher,
      mnt,
      '--project',
      P,
      '--kms',
      server.url,
      '--key-fd',
      '3',
      '--key-agent',
      sock,
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  (child.stdio[3] as NodeJS.WritableStream).end(keyJson(who));
  await new Promise<void>((res, rej) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('trefs: mounted')) res();
    });
    child.once('exit', (code) => rej(new Error(`trefs exited with ${code}: ${err}`)));
  });
  const d = { child, stderr: () => err };
  daemons.push({ d, mnt });
  return d;
}

/** Runs a node CLI with `fd3` on descriptor 3; resolves with its exit and output. */
function runNode(args: string[], fd3 = '') {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  children.push(proc);
  (proc.stdio[3] as NodeJS.WritableStream).on('error', () => undefined);
  (proc.stdio[3] as NodeJS.WritableStream).end(fd3);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) =>
    proc.once('exit', (code) => res({ code, stdout, stderr })),
  );
  return { proc, done, out: () => stdout, err: () => stderr };
}

async function startIngress(root: string): Promise<string> {
  const tokenFile = join(base, 'ingress.token');
  await writeFile(tokenFile, hub.add('ingress', false, true) + '\n', { mode: 0o600 });
  const r = runNode([
    TRE,
    'ingress',
    'serve',
    '--root',
    root,
    '--port',
    '0',
    '--kms',
    server.url,
    '--service-token-file',
    tokenFile,
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

async function unmount(d: Daemon, mnt: string): Promise<void> {
  await stopDaemon(d, mnt);
}

/** One key agent request over its unix socket. */
function agent(
  sock: string,
  path: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: sock, path, method: 'POST' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
        }),
      );
    });
    req.on('error', reject);
    req.end(typeof body === 'string' ? body : JSON.stringify(body));
  });
}

async function errno(fn: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

/** Every cipher file below `dir` by the file ID in its header. */
async function cipherFiles(
  dir: string,
  out = new Map<string, string>(),
): Promise<Map<string, string>> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== '.tre-freeze') await cipherFiles(p, out);
    } else if (e.isFile() && !e.name.startsWith('gocryptfs.')) {
      const head = (await readFile(p)).subarray(0, 18);
      if (head.length === 18) out.set(parseHeader(head).toString('hex'), p);
    }
  }
  return out;
}

beforeAll(async () => {
  base = await mkdtemp(join(process.env.TREFS_TEST_TMP ?? tmpdir(), 'trefs-egress-'));
  const defaults = loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' });
  const config = {
    ...defaults,
    hub: { ...defaults.hub, services: ['ingress'] },
    host: '127.0.0.1',
    port: 0,
    database: join(base, 'kms.sqlite'),
    auditKey: join(base, 'audit-key.pem'),
    agreementVersion: '2025-1',
  };
  server = await KmsServer.start(config, {
    auth: hub,
    logger: pino({ level: 'silent' }),
    defaultMetrics: false,
  });
  admin = new KmsClient({ baseUrl: server.url, token: hub.add('admin', true) });
  pi = await person('pia');
  owner = await person('dora');
  rex = await person('rex');
  rita = await person('rita');
  await pi.c.proposeProject({ id: P, title: 'trefs egress' });
  await pi.c.addMember(P, { username: 'dora', role: 'data_owner' });
  projectKp = await generateKeyPair('x25519');
  await pi.c.publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(randomBytes(32), projectKp, volumeKeyContext(P)),
    wraps: [
      {
        username: 'pia',
        wrapped: await wrapKey(projectKp.privateKey, pi.kek, projectKeyContext(P, 1)),
      },
      {
        username: 'dora',
        wrapped: await wrapKey(projectKp.privateKey, owner.kek, projectKeyContext(P, 1)),
      },
    ],
  });
  await owner.c.consent(P);
  await pi.c.addMember(P, { username: 'rex', role: 'researcher' });
  await pi.c.addMember(P, { username: 'rita', role: 'researcher' });
}, 120_000);

afterAll(async () => {
  for (const { d, mnt } of daemons) await stopDaemon(d, mnt);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await server?.close(1000);
  await rm(base, { recursive: true, force: true });
}, 60_000);

describe('the key agent with the KMS', () => {
  test('grants: completed with the project key trefs holds; the newcomers open it', async () => {
    requireFuse();
    const cipher = join(base, 'c0');
    const mnt = join(base, 'm0');
    const sock = join(base, 'pia0.sock');
    await mkdir(cipher);
    await mkdir(mnt);
    expect((await pi.c.grants(P)).map((g) => g.username).sort()).toEqual(['rex', 'rita']);
    const d = await mount(pi, cipher, mnt, sock);
    try {
      for (const bad of [{}, { project: 7 }, { project: P, extra: 1 }, 'nope']) {
        const r = await agent(sock, '/grants', bad);
        expect(r.status).toBe(400);
        expect(String(r.body.error)).toMatch(/project|field|JSON/);
      }
      const other = await agent(sock, '/grants', { project: 'another-project' });
      expect(other.status).toBe(403);
      expect(other.body.code).toBe('other_project');
      expect(await pi.c.grants(P)).toHaveLength(2);

      const r = await agent(sock, '/grants', { project: P });
      expect(r.status).toBe(200);
      const done = r.body.completed as Array<{ username: string }>;
      expect(done.map((g) => g.username).sort()).toEqual(['rex', 'rita']);
      expect(await pi.c.grants(P)).toEqual([]);
      // Each newcomer's KEK opens the project private key the KMS now releases to them.
      for (const who of [rex, rita]) {
        const mine = await who.c.projectKey(P);
        const priv = await unwrapKey(mine.wrapped!, who.kek, projectKeyContext(P, 1));
        expect((await publicKeyFromPrivate('x25519', priv)).kid).toBe(projectKp.kid);
        expect(decodePublicKey(mine.publicKey).kid).toBe(projectKp.kid);
      }
      // Nothing pending: a second call completes nothing.
      const again = await agent(sock, '/grants', { project: P });
      expect(again.body).toEqual({ completed: [], skipped: [] });
    } finally {
      await unmount(d, mnt);
    }
  }, 120_000);

  test('filing freezes the files in every mount and across a remount; lift restores writes', async () => {
    requireFuse();
    const cipher = join(base, 'c1');
    const mnt = join(base, 'm1');
    const mntPi = join(base, 'm1-pia');
    const sock = join(base, 'rex1.sock');
    const sockPi = join(base, 'pia1.sock');
    const sockRita = join(base, 'rita1.sock');
    const mntRita = join(base, 'm1-rita');
    for (const d of [cipher, mnt, mntPi, mntRita]) await mkdir(d);
    let d: Daemon = await mount(rex, cipher, mnt, sock);
    const passing = 'region,count\nnorth,40\nsouth,55\n';
    const failing = 'region,count\neast,3\nwest,70\n';
    await mkdir(join(mnt, 'export'));
    await writeFile(join(mnt, 'export', 'a.csv'), passing);
    await writeFile(join(mnt, 'export', 'b.csv'), failing);
    await writeFile(join(mnt, 'export', 'notes.txt'), 'not filed\n');
    const held = await open(join(mnt, 'export', 'a.csv'), 'r+');
    const req = await rex.c.createEgress(P, 'tables');
    const paths = ['export/a.csv', 'export/b.csv'];

    // Bad bodies: 400 with a message, and nothing is frozen.
    const bad: unknown[] = [
      'not json',
      {},
      { paths, requestId: 'one' },
      { paths, requestId: 0 },
      { paths: [], requestId: req.id },
      { paths: ['../etc/passwd'], requestId: req.id },
      { paths: ['//export/a.csv'], requestId: req.id },
      { paths: ['export/a.csv', '/export/a.csv'], requestId: req.id },
      { paths: ['export//a.csv'], requestId: req.id },
      { paths: ['export/a.csv', 'export/a.csv'], requestId: req.id },
      { paths, requestId: req.id, also: true },
    ];
    for (const b of bad) {
      const r = await agent(sock, '/freeze', b);
      expect([r.status, typeof r.body.error]).toEqual([400, 'string']);
    }
    expect(await readdir(cipher)).not.toContain('.tre-freeze');
    await appendFile(join(mnt, 'export', 'a.csv'), '');
    // Someone else's request, or a missing file: refused, nothing frozen.
    const ritaReq = await rita.c.createEgress(P, 'not rex');
    expect((await agent(sock, '/freeze', { paths, requestId: ritaReq.id })).status).toBe(403);
    const missing = await agent(sock, '/freeze', { paths: ['export/x.csv'], requestId: req.id });
    expect(missing.status).toBe(404);
    expect(await readdir(cipher)).not.toContain('.tre-freeze');

    const frozen = await agent(sock, '/freeze', { paths, requestId: req.id });
    expect(frozen.status).toBe(200);
    const files = frozen.body.files as Array<{
      path: string;
      fileId: string;
      size: number;
      sha256: string;
      keys: Array<{ username: string; wrapped: never }>;
    }>;
    expect(files.map((f) => f.path)).toEqual(paths);
    // The manifest is the ciphertext as stored.
    const onDisk = await cipherFiles(cipher);
    for (const f of files) {
      const bytes = await readFile(onDisk.get(f.fileId)!);
      expect(f.size).toBe(bytes.length);
      expect(f.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(f.keys.map((k) => k.username).sort()).toEqual(['dora', 'pia', 'rex']);
    }
    const manifest = await agent(sock, '/manifest', { paths });
    expect(manifest.body.files).toEqual(files.map(({ keys: _k, ...m }) => m));
    // Paths may also be given from the mount's root; answers name them as asked.
    const slashed = await agent(sock, '/manifest', { paths: paths.map((p) => `/${p}`) });
    expect(slashed.body.files).toEqual(
      files.map(({ keys: _k, ...m }) => ({ ...m, path: `/${m.path}` })),
    );

    // Every kind of change fails; reads and the unfiled file are fine.
    const a = join(mnt, 'export', 'a.csv');
    const checks = async (root: string) => {
      const f = join(root, 'export', 'a.csv');
      expect(await errno(() => appendFile(f, 'x'))).toBe('EROFS');
      expect(await errno(() => writeFile(f, 'replaced'))).toBe('EROFS');
      expect(await errno(() => open(f, 'r+').then((h) => h.close()))).toBe('EROFS');
      expect(await errno(() => truncate(f, 1))).toBe('EROFS');
      expect(await errno(() => rename(f, join(root, 'export', 'moved.csv')))).toBe('EPERM');
      expect(await errno(() => rename(join(root, 'export'), join(root, 'out')))).toBe('EPERM');
      expect(await errno(() => rename(join(root, 'export', 'notes.txt'), f))).toBe('EPERM');
      expect(await errno(() => unlink(f))).toBe('EPERM');
      expect(await errno(() => chmod(f, 0o600))).toBe('EPERM');
      expect(await errno(() => utimes(f, new Date(0), new Date(0)))).toBe('EPERM');
      expect(await errno(() => unlink(join(root, 'export', 'b.csv')))).toBe('EPERM');
      expect(await readFile(f, 'utf8')).toBe(passing);
    };
    await checks(mnt);
    expect(await errno(() => held.write('changed', 0))).toBe('EROFS');
    await held.close();
    await appendFile(join(mnt, 'export', 'notes.txt'), 'still writable\n');

    // Another member's mount of the same tree (the PI's) enforces the same freeze.
    const dPi = await mount(pi, cipher, mntPi, sockPi);
    await checks(mntPi);

    // The request goes to review; its files stay frozen: lift is refused.
    const sdc = [checkFile('export/a.csv', passing), checkFile('export/b.csv', failing)];
    await rex.c.putEgressFiles(
      P,
      req.id,
      files.map((f, i) => ({
        fileId: f.fileId,
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        sdc: sdc[i]!,
        keys: f.keys,
      })),
    );
    await rex.c.submitEgress(P, req.id);
    const early = await agent(sock, '/freeze/lift', { requestId: req.id });
    expect(early.status).toBe(409);
    expect(String(early.body.error)).toMatch(/submitted/);

    // Review keys: the reviewer's own wrap opens the frozen ciphertext; others get nothing.
    const rk = await agent(sockPi, '/egress/review-key', {
      project: P,
      requestId: req.id,
      fileId: files[0]!.fileId,
    });
    expect(rk.status).toBe(200);
    const dek = Buffer.from(String(rk.body.key), 'base64');
    // Neither the review key nor a KEK appears in the daemons' logs.
    for (const [log, who] of [
      [dPi.stderr(), pi],
      [d.stderr(), rex],
    ] as const) {
      expect(log).not.toContain(String(rk.body.key));
      expect(log).not.toContain(dek.toString('hex'));
      expect(log).not.toContain(Buffer.from(who.kek.privateKey).toString('base64url'));
    }
    const plainOut = join(base, 'reviewed.csv');
    await decryptFile(dek, onDisk.get(files[0]!.fileId)!, plainOut);
    expect(await readFile(plainOut, 'utf8')).toBe(passing);
    // The same with the wrap the reviewer fetched from the KMS; another member cannot open it.
    const piWrap = await pi.c.egressReviewKey(P, req.id, files[0]!.fileId);
    const byWrap = await agent(sockPi, '/egress/review-key', {
      projectId: P,
      fileId: files[0]!.fileId,
      wrapped: piWrap.wrapped,
    });
    expect(byWrap.body.key).toBe(rk.body.key);
    const stolen = await agent(sock, '/egress/review-key', {
      projectId: P,
      fileId: files[0]!.fileId,
      wrapped: piWrap.wrapped,
    });
    expect([stolen.status, stolen.body.code, stolen.body.key]).toEqual([
      403,
      'not_yours',
      undefined,
    ]);
    const asRequester = await agent(sock, '/egress/review-key', {
      project: P,
      requestId: req.id,
      fileId: files[0]!.fileId,
    });
    expect(asRequester.status).toBe(403);
    expect(asRequester.body.key).toBeUndefined();
    const dRita = await mount(rita, cipher, mntRita, sockRita);
    const foreign = await agent(sockRita, '/egress/review-key', {
      project: P,
      requestId: req.id,
      fileId: files[0]!.fileId,
    });
    expect(foreign.status).toBe(403);
    expect(foreign.body.key).toBeUndefined();
    // Rita cannot lift rex's freeze either (the KMS does not show her his request), and her
    // mount enforces it.
    expect((await agent(sockRita, '/freeze/lift', { requestId: req.id })).status).toBe(403);
    expect(await errno(() => appendFile(join(mntRita, 'export', 'a.csv'), 'x'))).toBe('EROFS');
    await unmount(dRita, mntRita);
    for (const b of [{}, { project: P, requestId: req.id, fileId: 'xyz' }]) {
      expect((await agent(sockPi, '/egress/review-key', b)).status).toBe(400);
    }

    // A restarted trefs still enforces the freeze (it is recorded in the cipher tree).
    await unmount(d, mnt);
    d = await mount(rex, cipher, mnt, sock);
    await checks(mnt);

    // Returned for changes: the requester lifts the freeze and writes again.
    await pi.c.decideEgress(P, req.id, 'return');
    const lifted = await agent(sock, '/freeze/lift', { requestId: req.id });
    expect(lifted.body).toEqual({ requestId: req.id, lifted: true });
    await appendFile(a, 'north,1\n');
    await rename(join(mnt, 'export', 'b.csv'), join(mnt, 'export', 'b2.csv'));
    expect(await readFile(a, 'utf8')).toBe(passing + 'north,1\n');
    // ... in the other member's mount too, and after a remount.
    await appendFile(join(mntPi, 'export', 'a.csv'), 'south,2\n');
    await unmount(d, mnt);
    d = await mount(rex, cipher, mnt, sock);
    await unlink(join(mnt, 'export', 'b2.csv'));
    await unmount(dPi, mntPi);
    await unmount(d, mnt);
  }, 180_000);

  test('a released request downloads with tre download, from the frozen files in place', async () => {
    requireFuse();
    if (!existsSync(TRE)) throw new Error(`${TRE} is missing: run the root build first`);
    // The sessions' cipher directory is the ingress's project tree, which serves releases.
    const ingressRoot = join(base, 'ingress');
    const cipher = join(ingressRoot, 'projects', P, 'cipher');
    const mnt = join(base, 'm2');
    const sock = join(base, 'rex2.sock');
    await mkdir(cipher, { recursive: true });
    await mkdir(mnt);
    const ingress = await startIngress(ingressRoot);
    const d = await mount(rex, cipher, mnt, sock);
    const table = 'ward,patients\nA,120\nB,95\n';
    try {
      await mkdir(join(mnt, 'export'));
      await writeFile(join(mnt, 'export', 'wards.csv'), table);
      const req = await rex.c.createEgress(P, 'wards');
      const frozen = await agent(sock, '/freeze', {
        paths: ['export/wards.csv'],
        requestId: req.id,
      });
      expect(frozen.status).toBe(200);
      const [f] = frozen.body.files as Array<{
        path: string;
        fileId: string;
        size: number;
        sha256: string;
        keys: Array<{ username: string; wrapped: never }>;
      }>;
      await rex.c.putEgressFiles(P, req.id, [{ ...f!, sdc: checkFile(f!.path, table) }]);
      await rex.c.submitEgress(P, req.id);
      await pi.c.voteEgress(P, req.id, f!.fileId, 'approve');
      await owner.c.voteEgress(P, req.id, f!.fileId, 'approve');
      await pi.c.decideEgress(P, req.id, 'approve');
      expect((await agent(sock, '/freeze/lift', { requestId: req.id })).status).toBe(409);

      const keyFile = join(base, 'rex.kek');
      await writeFile(keyFile, JSON.stringify(await encryptKeyFile(rex.kek, PASS)), {
        mode: 0o600,
      });
      const tokenFile = join(base, 'rex.token');
      await writeFile(tokenFile, rex.token + '\n', { mode: 0o600 });
      const out = join(base, 'released');
      const dl = await runNode(
        [
          TRE,
          'download',
          String(req.id),
          '--project',
          P,
          '--kms',
          server.url,
          '--ingress',
          ingress,
          '--out',
          out,
          '--key-file',
          keyFile,
          '--passphrase-fd',
          '3',
          '--token-file',
          tokenFile,
        ],
        PASS,
      ).done;
      expect({ code: dl.code, stderr: dl.stderr }).toEqual({ code: 0, stderr: '' });
      expect(await readFile(join(out, 'export', 'wards.csv'), 'utf8')).toBe(table);
    } finally {
      await unmount(d, mnt);
    }
  }, 180_000);
});
