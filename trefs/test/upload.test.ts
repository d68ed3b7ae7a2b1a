/**
 * Ingress to session: a data owner's `tre upload` (the real CLI, KMS mode) goes through the real
 * ingress service; once the PI confirms, the files sit in the project's cipher directory, and a
 * trefs mount of that directory, with keys from the same running KMS, reads back the tree
 * exactly (names including a long one, contents, an empty file), and what the session writes
 * there reads back after a remount.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { pino } from 'pino';
import {
  decodePublicKey,
  encodePublicKey,
  generateKeyPair,
  parseKeyFile,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import { KmsClient, KmsServer, loadConfig } from '@tre/kms-service';
import { projectKeyContext, volumeKeyContext } from '@tre/crypto';
import { CLI, requireFuse, stopDaemon, type Daemon } from './helpers.js';

const TRE = resolve('..', 'uploader', 'dist', 'cli.js');
const P = 'ingress-to-trefs';
const DAY = 24 * 3600 * 1000;
const PASS = 'a passphrase for the test only';

let dir: string;
let kms: KmsServer;
const tokens: Record<string, string> = {};
const children = new Set<ChildProcess>();
const as = (name: string) => new KmsClient({ baseUrl: kms.url, token: tokens[name]! });

function runNode(args: string[], fd3 = '') {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  children.add(proc);
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
  const r = runNode([
    TRE,
    'ingress',
    'serve',
    '--root',
    root,
    '--port',
    '0',
    '--kms',
    kms.url,
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

beforeAll(async () => {
  dir = await mkdtemp(join(process.env.TREFS_TEST_TMP ?? tmpdir(), 'trefs-ingress-'));
  const users = new Map<string, { name: string; admin: boolean; service?: boolean }>();
  for (const [name, admin] of [
    ['alice', false],
    ['bob', false],
    ['root', true],
  ] as const) {
    tokens[name] = `tok-${name}-${randomBytes(8).toString('hex')}`;
    users.set(tokens[name]!, { name, admin });
    await writeFile(join(dir, `${name}.token`), tokens[name]! + '\n', { mode: 0o600 });
  }
  // The ingress confirms the staged files' keys as a trusted hub service with its own token.
  tokens.ingress = `tok-ingress-${randomBytes(8).toString('hex')}`;
  users.set(tokens.ingress, { name: 'ingress', admin: false, service: true });
  await writeFile(join(dir, 'ingress.token'), tokens.ingress + '\n', { mode: 0o600 });
  const base = loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' });
  const config = {
    ...base,
    hub: { ...base.hub, services: ['ingress'] },
    host: '127.0.0.1',
    port: 0,
    database: join(dir, 'kms.sqlite'),
    auditKey: join(dir, 'audit.pem'),
  };
  kms = await KmsServer.start(config, {
    auth: { resolve: async (t: string) => users.get(t) ?? null },
    logger: pino({ level: 'silent' }),
    defaultMetrics: false,
  });
  for (const name of ['alice', 'bob']) {
    await as(name).register('University Hospital');
    await as(name).acceptAgreement(config.agreementVersion);
    for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
      await as('root').recordTraining(
        name,
        kind,
        new Date(Date.now() - DAY).toISOString(),
        new Date(Date.now() + 300 * DAY).toISOString(),
      );
    }
  }
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await kms?.close(1000);
  await rm(dir, { recursive: true, force: true });
}, 60_000);

test('a tree uploaded with tre upload reads back through trefs after confirmation', async () => {
  requireFuse();
  if (!existsSync(TRE)) throw new Error(`${TRE} is missing: run the root build first`);
  const ingressUrl = await startIngress(join(dir, 'ingress'));
  // The data owner's KEK comes from `tre keygen`, as on their own machine.
  const keyFile = join(dir, 'alice.kek');
  const kg = await runNode(
    [
      TRE,
      'keygen',
      '--key-file',
      keyFile,
      '--passphrase-fd',
      '3',
      '--kms',
      kms.url,
      '--token-file',
      join(dir, 'alice.token'),
    ],
    PASS,
  ).done;
  expect(kg.code).toBe(0);
  const bobKek: KeyPair = await generateKeyPair('x25519');
  await as('bob').addKek(encodePublicKey(bobKek));
  await as('bob').proposeProject({ id: P, title: 'Ingress to trefs' });
  await as('bob').addMember(P, { username: 'alice', role: 'data_owner' });
  await as('alice').consent(P);
  const projectKp = await generateKeyPair('x25519');
  const alicePub = decodePublicKey(parseKeyFile(await readFile(keyFile, 'utf8')).publicKey);
  await as('bob').publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(randomBytes(32), projectKp, volumeKeyContext(P)),
    wraps: [
      {
        username: 'bob',
        wrapped: await wrapKey(projectKp.privateKey, bobKek, projectKeyContext(P, 1)),
      },
      {
        username: 'alice',
        wrapped: await wrapKey(projectKp.privateKey, alicePub, projectKeyContext(P, 1)),
      },
    ],
  });

  const src = join(dir, 'src', 'visit-1');
  const contents: Record<string, Buffer> = {
    'labs.csv': randomBytes(1_300_000),
    'notes/ärzte.txt': randomBytes(3000),
    [`long/${'n'.repeat(200)}.txt`]: randomBytes(10),
    empty: Buffer.alloc(0),
  };
  for (const [rel, data] of Object.entries(contents)) {
    await mkdir(dirname(join(src, rel)), { recursive: true });
    await writeFile(join(src, rel), data);
  }
  const up = await runNode(
    [
      TRE,
      'upload',
      src,
      '--project',
      P,
      '--ingress',
      ingressUrl,
      '--kms',
      kms.url,
      '--key-file',
      keyFile,
      '--passphrase-fd',
      '3',
      '--token-file',
      join(dir, 'alice.token'),
      '--state-dir',
      join(dir, 'state'),
      '--legal-basis',
      'consent',
      '--pseudonymised',
      '--no-direct-identifiers',
      '--minimised',
    ],
    PASS,
  ).done;
  expect({ code: up.code, stderr: up.stderr }).toEqual({ code: 0, stderr: '' });
  const id = /ingress request ([0-9a-f]+)/.exec(up.stdout)![1]!;

  const cipher = join(dir, 'ingress', 'projects', P, 'cipher');
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  const key = JSON.stringify({
    kem: bobKek.kem,
    privateKey: Buffer.from(bobKek.privateKey).toString('base64url'),
    kmsToken: tokens.bob,
  });
  const mount = async (): Promise<Daemon> => {
    const r = runNode(
      [CLI, 'mount', cipher, mnt, '--project', P, '--kms', kms.url, '--key-fd', '3'],
      key,
    );
    await new Promise<void>((res, rej) => {
      r.proc.stdout!.on('data', () => r.out().includes('trefs: mounted') && res());
      r.proc.once('exit', (code) => rej(new Error(`trefs exited with ${code}: ${r.err()}`)));
    });
    return { child: r.proc, stderr: r.err };
  };

  // The PI confirms the request; the files become visible in the cipher directory.
  const res = await fetch(`${ingressUrl}/v1/ingress-requests/${id}/review`, {
    method: 'POST',
    headers: { Authorization: `token ${tokens.bob}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ decision: 'confirm' }),
  });
  expect(res.status).toBe(200);

  let d: Daemon | undefined = await mount();
  try {
    const root = join(mnt, 'visit-1');
    for (const [rel, data] of Object.entries(contents)) {
      const got = await readFile(join(root, rel));
      expect({ rel, same: got.equals(data) }).toEqual({ rel, same: true });
    }
    expect((await readdir(root)).sort()).toEqual(['empty', 'labs.csv', 'long', 'notes']);
    expect(await readdir(join(root, 'notes'))).toEqual(['ärzte.txt']);
    // And the mount writes into the same tree in the same format.
    await writeFile(join(root, 'notes', 'derived.txt'), 'from the session');
    await stopDaemon(d, mnt);
    d = await mount();
    expect(await readFile(join(root, 'notes', 'derived.txt'), 'utf8')).toBe('from the session');
  } finally {
    await stopDaemon(d, mnt);
  }
}, 180_000);
