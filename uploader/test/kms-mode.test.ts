/**
 * KMS mode against the real KMS (in-process `KmsServer`, real SQLite; the hub is a token table):
 * `tre keygen` registers the KEK, the PI publishes the project key and the volume key wrapped
 * to the members' KEKs, the ingress takes identities and roles from the KMS, `tre upload`
 * unwraps the volume key, encrypts, uploads, and registers each file's DEK wrapped to the
 * project key. The PI then fetches each DEK from the KMS and decrypts the confirmed files.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  ContentCipher,
  HEADER_LEN,
  decodePublicKey,
  encodePublicKey,
  generateKeyPair,
  parseKeyFile,
  unwrapKey,
  wrapKey,
} from '@tre/crypto';
import type { KeyPair } from '@tre/crypto';
import { KmsClient, KmsServer, loadConfig } from '@tre/kms-service';
import { dekContext, projectKeyContext, volumeKeyContext } from '@tre/crypto';
import { api, killAll, makeTree, startIngressWith, tre } from './helpers.js';
import type { Ingress } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-kms-mode-'));
const P = 'cohort';
const DAY = 24 * 3600 * 1000;
const tokens: Record<string, string> = {};
const PASS = 'correct horse battery staple';
let kms: KmsServer;
let ingress: Ingress;
let projectKp: KeyPair;

const as = (name: string) => new KmsClient({ baseUrl: kms.url, token: tokens[name]! });

beforeAll(async () => {
  const users = new Map<string, { name: string; admin: boolean; service?: boolean }>();
  // The ingress runs as a hub service with its own token, trusted by the KMS (hub.services).
  tokens.ingress = `tok-ingress-${randomBytes(8).toString('hex')}`;
  users.set(tokens.ingress, { name: 'ingress', admin: false, service: true });
  await writeFile(join(dir, 'ingress.token'), tokens.ingress + '\n');
  for (const [name, admin] of [
    ['alice', false],
    ['bob', false],
    ['root', true],
  ] as const) {
    tokens[name] = `tok-${name}-${randomBytes(8).toString('hex')}`;
    users.set(tokens[name]!, { name, admin });
    await writeFile(join(dir, `${name}.token`), tokens[name]! + '\n');
  }
  const config = {
    ...loadConfig(undefined, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/hub/api' }),
    host: '127.0.0.1',
    port: 0,
    database: join(dir, 'kms.sqlite'),
    auditKey: join(dir, 'audit.pem'),
  };
  config.hub = { ...config.hub, services: ['ingress'] };
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
  ingress = await startIngressWith(join(dir, 'ingress'), [
    '--kms',
    kms.url,
    '--service-token-file',
    join(dir, 'ingress.token'),
  ]);
}, 60_000);

afterAll(async () => {
  await ingress?.stop();
  killAll();
  await kms?.close(1000);
  await rm(dir, { recursive: true, force: true });
});

describe('tre with the KMS', () => {
  it('keygen writes a key file and registers its public key; key status agrees', async () => {
    const kf = join(dir, 'alice.kek');
    const r = await tre(
      [
        'keygen',
        '--key-file',
        kf,
        '--passphrase-fd',
        '3',
        '--kms',
        kms.url,
        '--token-file',
        join(dir, 'alice.token'),
      ],
      PASS,
    ).done;
    expect(r.code).toBe(0);
    const file = parseKeyFile(await readFile(kf, 'utf8'));
    expect(JSON.stringify(file)).not.toContain(PASS);
    expect((await as('alice').me()).kek?.kid).toBe(file.kid);
    const s = await tre([
      'key',
      'status',
      '--key-file',
      kf,
      '--kms',
      kms.url,
      '--token-file',
      join(dir, 'alice.token'),
    ]).done;
    expect(s.code).toBe(0);
    expect(s.stdout).toContain('registered as your current key');
    const again = await tre(['keygen', '--key-file', kf, '--passphrase-fd', '3'], PASS).done;
    expect(again.code).toBe(4);
  }, 60_000);

  it('uploads with keys from the KMS and registers DEKs the PI can open', async () => {
    const bobKek = await generateKeyPair();
    await as('bob').addKek(encodePublicKey(bobKek));
    await as('bob').proposeProject({ id: P, title: 'Cohort', description: 'readmissions' });
    await as('bob').addMember(P, { username: 'alice', role: 'data_owner' });
    await as('alice').consent(P);
    projectKp = await generateKeyPair();
    const volumeKey = randomBytes(32);
    const alicePub = decodePublicKey(
      parseKeyFile(await readFile(join(dir, 'alice.kek'), 'utf8')).publicKey,
    );
    await as('bob').publishEpoch(P, {
      epoch: 1,
      publicKey: encodePublicKey(projectKp),
      volumeKey: await wrapKey(volumeKey, projectKp, volumeKeyContext(P)),
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
      'labs.csv': randomBytes(1_500_000),
      'notes/ärzte.txt': randomBytes(3000),
      empty: Buffer.alloc(0),
    };
    await makeTree(src, contents);
    const args = [
      'upload',
      src,
      '--project',
      P,
      '--ingress',
      ingress.url,
      '--kms',
      kms.url,
      '--key-file',
      join(dir, 'alice.kek'),
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
    ];
    const wrong = await tre(args, 'not the passphrase').done;
    expect(wrong.code).toBe(7);
    const r = await tre(args, PASS).done;
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const id = /ingress request ([0-9a-f]+)/.exec(r.stdout)![1]!;
    // Registered, but pending: no key of an unconfirmed file leaves the KMS.
    const before = (await api(ingress.url, tokens.bob!, 'GET', `/v1/ingress-requests/${id}`))
      .json as { files: Array<{ fileId: string }> };
    expect(before.files).toHaveLength(3);
    for (const f of before.files) {
      await expect(as('bob').fileKey(P, f.fileId)).rejects.toMatchObject({
        status: 409,
        code: 'file_pending',
      });
    }
    const ok = await api(ingress.url, tokens.bob!, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'confirm',
    });
    expect(ok.status).toBe(200);
    const view = ok.json as { files: Array<{ fileId: string; digest: string; path: string }> };
    expect(view.files).toHaveLength(3);

    const want = new Set(Object.values(contents).map((b) => b.toString('hex')));
    const got = new Set<string>();
    for (const f of view.files) {
      const rel = await as('bob').fileKey(P, f.fileId);
      expect(rel.sha256).toBe(f.digest);
      const dek = await unwrapKey(rel.wrapped, projectKp, dekContext(P, f.fileId));
      const ct = await readFile(
        join(dir, 'ingress', 'projects', P, 'cipher', ...f.path.split('/')),
      );
      if (ct.length === 0) {
        got.add('');
        continue;
      }
      expect(ct.subarray(2, HEADER_LEN).toString('hex')).toBe(f.fileId);
      got.add(
        new ContentCipher(dek)
          .decryptBlocks(ct.subarray(HEADER_LEN), 0, ct.subarray(2, HEADER_LEN))
          .toString('hex'),
      );
    }
    expect(got).toEqual(want);
    expect(await readdir(join(dir, 'state'))).toHaveLength(1);
  }, 120_000);

  it('destroys the keys of rejected files and mirrors the ingress audit into the KMS', async () => {
    const src = join(dir, 'src', 'visit-2');
    await makeTree(src, { 'wrong.csv': randomBytes(20_000), 'also-wrong.csv': randomBytes(10) });
    const r = await tre(
      [
        'upload',
        src,
        '--project',
        P,
        '--ingress',
        ingress.url,
        '--kms',
        kms.url,
        '--key-file',
        join(dir, 'alice.kek'),
        '--passphrase-fd',
        '3',
        '--token-file',
        join(dir, 'alice.token'),
        '--state-dir',
        join(dir, 'state-2'),
        '--legal-basis',
        'consent',
        '--pseudonymised',
        '--no-direct-identifiers',
        '--minimised',
      ],
      PASS,
    ).done;
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const id = /ingress request ([0-9a-f]+)/.exec(r.stdout)![1]!;
    const no = await api(ingress.url, tokens.bob!, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'reject',
      reason: 'not pseudonymised',
    });
    expect(no.status).toBe(200);
    const files = (no.json as { files: Array<{ fileId: string }> }).files;
    expect(files).toHaveLength(2);
    for (const f of files) {
      const e = await as('bob')
        .fileKey(P, f.fileId)
        .then(
          () => undefined,
          (x: unknown) => x as { status: number },
        );
      expect(e?.status).toBeGreaterThanOrEqual(400);
      expect(e?.status).not.toBe(409);
    }
    // The mirror runs in the background: wait for the rejection to arrive.
    let audit = '';
    for (let i = 0; i < 100; i++) {
      audit = await as('root').exportAudit();
      if (audit.includes('ingress.reject')) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const lines = audit
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { actor?: string; action?: string; object?: string });
    const mirrored = lines.filter((l) => l.actor?.startsWith('service:ingress'));
    const actions = new Set(mirrored.map((l) => l.action));
    for (const a of ['ingress.open', 'upload.create', 'upload.complete', 'ingress.submit'])
      expect(actions).toContain(a);
    const confirm = mirrored.find((l) => l.action === 'ingress.confirm');
    expect(confirm?.object).toContain('keys:confirmed:3');
    const reject = mirrored.find((l) => l.action === 'ingress.reject');
    expect(reject?.object).toContain('keys:destroyed:2');
    expect(lines.filter((l) => l.action === 'file.destroy')).toHaveLength(2);
    expect(audit).not.toContain(PASS);
  }, 120_000);
});
