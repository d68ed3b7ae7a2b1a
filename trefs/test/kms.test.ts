/**
 * trefs against a real, running KMS (kms-service over HTTP, real SQLite): the project key and
 * volume key come from the KMS, files created through the mount are registered there before
 * their first block (their DEKs, fetched back from the KMS, decrypt the ciphertext), audit
 * batches land in the KMS's audit log with the caller's pid and executable, a removed member
 * loses new opens within 5 seconds, and a non-member or a wrong KEK mounts nothing.
 *
 * The hub is replaced by a token table (the KMS's own tests cover the real JupyterHub); every
 * other part is the real one, and the daemon runs as its own process.
 */
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  decodePublicKey,
  decryptFile,
  encodePublicKey,
  generateKeyPair,
  parseHeader,
  publicKeyFromPrivate,
  unwrapKey,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient, KmsServer, loadConfig } from '@tre/kms-service';
import { dekContext, projectKeyContext, volumeKeyContext } from '@tre/crypto';
import { CLI, isMounted, requireFuse, run, stopDaemon, type Daemon } from './helpers.js';

const P = 'trefs-e2e';
const DAY = 24 * 3600 * 1000;

class TokenTable {
  readonly users = new Map<string, { name: string; admin: boolean }>();
  add(name: string, admin = false): string {
    const token = `tok-${name}-${randomBytes(8).toString('hex')}`;
    this.users.set(token, { name, admin });
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
let researcher: Person;
let outsider: Person;
let projectKp: KeyPair;

async function person(name: string, isAdmin = false): Promise<Person> {
  const token = hub.add(name, isAdmin);
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

function keyJson(p: Person, kek: KeyPair = p.kek): string {
  return JSON.stringify({
    kem: kek.kem,
    privateKey: Buffer.from(kek.privateKey).toString('base64url'),
    kmsToken: p.token,
  });
}

function mountArgs(cipher: string, mnt: string, extra: string[]): string[] {
  return [
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
    ...extra,
  ];
}

/** Runs `trefs mount` until it prints its readiness line (resolve) or exits (reject). */
async function startDaemon(cipher: string, mnt: string, key: string, extra: string[] = []) {
  const child = spawn(process.execPath, mountArgs(cipher, mnt, extra), {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  (child.stdio[3] as NodeJS.WritableStream).end(key);
  await new Promise<void>((res, rej) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('trefs: mounted')) res();
    });
    child.once('exit', (code) => rej(new Error(`trefs exited with ${code}: ${err}`)));
  });
  return { child, stderr: () => err } satisfies Daemon;
}

function mountOnce(cipher: string, mnt: string, key: string) {
  return new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child: ChildProcess = spawn(process.execPath, mountArgs(cipher, mnt, []), {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    (child.stdio[3] as NodeJS.WritableStream).end(key);
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

beforeAll(async () => {
  base = await mkdtemp(join(process.env.TREFS_TEST_TMP ?? tmpdir(), 'trefs-kms-'));
  const config = {
    ...loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' }),
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
  const owner = await person('dora');
  researcher = await person('rex');
  outsider = await person('olga');

  // The PI's client makes the project key and the volume key, wrapped as trefs expects them.
  await pi.c.proposeProject({ id: P, title: 'trefs end to end' });
  await pi.c.addMember(P, { username: 'dora', role: 'data_owner' });
  projectKp = await generateKeyPair('x25519');
  const volumeKey = randomBytes(32);
  await pi.c.publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(volumeKey, projectKp, volumeKeyContext(P)),
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
  // The researcher joins; the PI's client completes the grant to the researcher's KEK.
  await pi.c.addMember(P, { username: 'rex', role: 'researcher' });
  const [grant] = await pi.c.grants(P);
  const mine = await pi.c.projectKey(P);
  const priv = await unwrapKey(mine.wrapped!, pi.kek, projectKeyContext(P, 1));
  const rebuilt = await publicKeyFromPrivate('x25519', priv);
  await pi.c.completeGrant(
    P,
    grant!.id,
    await wrapKey(
      rebuilt.privateKey,
      decodePublicKey(grant!.kek!.publicKey),
      projectKeyContext(P, 1),
    ),
  );
}, 120_000);

afterAll(async () => {
  await server?.close(1000);
  await rm(base, { recursive: true, force: true });
}, 60_000);

describe('trefs with the KMS', () => {
  test('not a member, or a wrong KEK: nothing is mounted and the reason is given', async () => {
    requireFuse();
    const cipher = join(base, 'c0');
    const mnt = join(base, 'm0');
    await mkdir(cipher);
    await mkdir(mnt);
    const notMember = await mountOnce(cipher, mnt, keyJson(outsider));
    expect(notMember.code).toBe(6);
    expect(notMember.stderr).toMatch(/trefs: /);
    expect(isMounted(mnt)).toBe(false);
    const wrong = await mountOnce(
      cipher,
      mnt,
      keyJson(researcher, await generateKeyPair('x25519')),
    );
    expect(wrong.code).toBe(4);
    expect(wrong.stderr).toMatch(/wrong KEK/);
    expect(isMounted(mnt)).toBe(false);
    // Refused before anything was written into the cipher directory.
    expect(await readdir(cipher)).toEqual([]);
  }, 60_000);

  test('files are registered before their first block, audited, and access ends on removal', async () => {
    requireFuse();
    const cipher = join(base, 'c1');
    const mnt = join(base, 'm1');
    await mkdir(cipher);
    await mkdir(mnt);
    let d: Daemon | undefined = await startDaemon(cipher, mnt, keyJson(researcher), [
      '--poll-ms',
      '500',
    ]);
    try {
      const content = randomBytes(50_000);
      await writeFile(join(mnt, 'cohort.bin'), content);
      await run('/bin/sh', [
        '-c',
        `cat '${join(mnt, 'cohort.bin')}' >/dev/null; echo x > '${join(mnt, 'tmp.txt')}'; ` +
          `mv '${join(mnt, 'tmp.txt')}' '${join(mnt, 'kept.txt')}'; rm '${join(mnt, 'kept.txt')}'`,
      ]);
      expect((await readFile(join(mnt, 'cohort.bin'))).equals(content)).toBe(true);

      // The file's DEK, as the KMS releases it to another member (the PI), decrypts the
      // ciphertext: the registration carries the key the blocks were written under.
      const entries = (await readdir(cipher)).filter((e) => e !== 'gocryptfs.diriv');
      expect(entries).toHaveLength(1);
      const cipherFile = join(cipher, entries[0]!);
      const fileId = parseHeader((await readFile(cipherFile)).subarray(0, 18)).toString('hex');
      const release = await pi.c.fileKey(P, fileId);
      const dek = await unwrapKey(release.wrapped, projectKp, dekContext(P, fileId));
      const out = join(base, 'plain.bin');
      await decryptFile(dek, cipherFile, out);
      expect((await readFile(out)).equals(content)).toBe(true);

      // Audit batches reach the KMS's log, with cipher paths and the caller, never names.
      let log = '';
      for (let i = 0; i < 50 && !/fs\.unlink/.test(log); i++) {
        await new Promise((r) => setTimeout(r, 200));
        log = await admin.exportAudit();
      }
      const fsLines = log.split('\n').filter((l) => l.includes('"fs.'));
      const actions = fsLines.map((l) => /"action":"(fs\.\w+)"/.exec(l)?.[1]);
      expect(actions).toEqual(
        expect.arrayContaining(['fs.create', 'fs.open', 'fs.rename', 'fs.unlink']),
      );
      const catOpen = fsLines.find((l) => l.includes('fs.open') && /exe:\\"[^"]*cat\\"/.test(l));
      expect(catOpen).toBeDefined();
      expect(catOpen).toMatch(/pid:[1-9]\d*/);
      expect(fsLines.every((l) => l.includes('"actor":"rex"') || l.includes('rex'))).toBe(true);
      expect(log).not.toMatch(/cohort|kept\.txt|tmp\.txt/);

      // Removing the member ends access: new opens fail within 5 seconds.
      await pi.c.removeMember(P, 'rex');
      const t0 = Date.now();
      let code: string | undefined;
      while (Date.now() - t0 < 5000) {
        try {
          await readFile(join(mnt, 'cohort.bin'));
        } catch (err) {
          code = (err as NodeJS.ErrnoException).code;
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(code).toBe('EACCES');
      expect(Date.now() - t0).toBeLessThan(5000);
      await stopDaemon(d, mnt);
      d = undefined;
      // And a new mount is refused before mounting.
      const again = await mountOnce(cipher, mnt, keyJson(researcher));
      expect(again.code).toBe(6);
      expect(isMounted(mnt)).toBe(false);
    } finally {
      await stopDaemon(d, mnt);
    }
  }, 120_000);
});
