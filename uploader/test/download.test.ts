/**
 * `tre download` against the real KMS (in-process `KmsServer`, real SQLite; the hub is a token
 * table) and the real ingress service (`tre ingress serve --kms`) serving the project tree:
 * a researcher's output files lie in the project's cipher directory as trefs writes them
 * (gocryptfs layout, per-file DEKs), are filed for egress with wraps to the requester and the
 * reviewers, reviewed, approved and released. Only the requester downloads, only while
 * released; tampered ciphertext, a wrong passphrase, an unreleased and a revoked request each
 * fail with their own exit code and leave nothing behind.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  DIRIV_NAME,
  HEADER_LEN,
  NameTransform,
  decodePublicKey,
  encodePublicKey,
  encryptFile,
  generateKeyPair,
  parseKeyFile,
  wrapKey,
} from '@tre/crypto';
import type { KeyPair, PublicKey } from '@tre/crypto';
import { KmsClient, KmsServer, checkFile, loadConfig } from '@tre/kms-service';
import type { EgressFiling } from '@tre/kms-service';
import { egressContext, projectKeyContext, volumeKeyContext } from '@tre/crypto';
import { api, killAll, sleep, startIngressWith, tre } from './helpers.js';
import type { Ingress } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-download-'));
const P = 'outputs';
const DAY = 24 * 3600 * 1000;
const PASS = 'a passphrase nobody guesses';
const tokens: Record<string, string> = {};
const keys: Record<string, PublicKey> = {};
let kms: KmsServer;
let ingress: Ingress;
let requestId: number;
const plain: Record<string, Buffer> = {};
const cipherFile: Record<string, string> = {};

const as = (name: string) => new KmsClient({ baseUrl: kms.url, token: tokens[name]! });
const cipherRoot = () => join(dir, 'ingress', 'projects', P, 'cipher');

function table(rows: number): Buffer {
  const lines = ['ward,admitted,discharged'];
  for (let i = 0; i < rows; i++) lines.push(`W${i},${100 + (i % 50)},${90 + (i % 40)}`);
  return Buffer.from(lines.join('\n') + '\n');
}

function downloadArgs(out: string, extra: string[] = []): string[] {
  return [
    'download',
    String(requestId),
    '--project',
    P,
    '--kms',
    kms.url,
    '--ingress',
    ingress.url,
    '--out',
    out,
    '--key-file',
    join(dir, 'rex.kek'),
    '--passphrase-fd',
    '3',
    '--token-file',
    join(dir, 'rex.token'),
    ...extra,
  ];
}

async function listAll(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(root.length + 1));
  }
  return out.sort();
}

/** Writes a file into the project tree as trefs does: encrypted name, per-file DEK. */
async function writeOutput(
  names: NameTransform,
  rel: string,
  content: Buffer,
  recipients: string[],
): Promise<EgressFiling> {
  const parts = rel.split('/');
  let cdir = cipherRoot();
  for (const part of parts.slice(0, -1)) {
    const iv = await readFile(join(cdir, DIRIV_NAME));
    cdir = join(cdir, names.encryptEntryName(part, iv).entry);
    await mkdir(cdir, { recursive: true });
    await writeFile(join(cdir, DIRIV_NAME), randomBytes(16), { flag: 'wx' }).catch(() => {});
  }
  const iv = await readFile(join(cdir, DIRIV_NAME));
  const target = join(cdir, names.encryptEntryName(parts.at(-1)!, iv).entry);
  const src = join(dir, 'plain-' + rel.replace(/\//g, '_'));
  await writeFile(src, content);
  const dek = randomBytes(32);
  await encryptFile(dek, src, target);
  const ct = await readFile(target);
  const fileId = ct.subarray(2, HEADER_LEN).toString('hex');
  plain[rel] = content;
  cipherFile[rel] = target;
  const wraps = [];
  for (const u of recipients) {
    wraps.push({ username: u, wrapped: await wrapKey(dek, keys[u]!, egressContext(P, fileId, u)) });
  }
  return {
    fileId,
    path: rel,
    size: ct.length,
    sha256: createHash('sha256').update(ct).digest('hex'),
    sdc: checkFile(rel, content.toString('latin1')),
    keys: wraps,
  };
}

beforeAll(async () => {
  const users = new Map<string, { name: string; admin: boolean; service?: boolean }>();
  // The ingress runs as a hub service with its own token, trusted by the KMS (hub.services).
  tokens.ingress = `tok-ingress-${randomBytes(8).toString('hex')}`;
  users.set(tokens.ingress, { name: 'ingress', admin: false, service: true });
  await writeFile(join(dir, 'ingress.token'), tokens.ingress + '\n');
  for (const [name, admin] of [
    ['rex', false],
    ['pia', false],
    ['dora', false],
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
  for (const name of ['rex', 'pia', 'dora']) {
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
  const kg = await tre(
    [
      'keygen',
      '--key-file',
      join(dir, 'rex.kek'),
      '--passphrase-fd',
      '3',
      '--kms',
      kms.url,
      '--token-file',
      join(dir, 'rex.token'),
    ],
    PASS,
  ).done;
  expect(kg.code).toBe(0);
  keys.rex = decodePublicKey(parseKeyFile(await readFile(join(dir, 'rex.kek'), 'utf8')).publicKey);
  for (const name of ['pia', 'dora']) {
    const kp: KeyPair = await generateKeyPair();
    await as(name).addKek(encodePublicKey(kp));
    keys[name] = kp;
  }
  await as('pia').proposeProject({ id: P, title: 'Outputs', description: 'readmissions' });
  await as('pia').addMember(P, { username: 'dora', role: 'data_owner' });
  await as('pia').addMember(P, { username: 'rex', role: 'researcher' });
  await as('dora').consent(P);
  const projectKp = await generateKeyPair();
  const volumeKey = randomBytes(32);
  const wraps = [];
  for (const u of ['pia', 'dora', 'rex']) {
    wraps.push({
      username: u,
      wrapped: await wrapKey(projectKp.privateKey, keys[u]!, projectKeyContext(P, 1)),
    });
  }
  await as('pia').publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(volumeKey, projectKp, volumeKeyContext(P)),
    wraps,
  });

  ingress = await startIngressWith(join(dir, 'ingress'), [
    '--kms',
    kms.url,
    '--service-token-file',
    join(dir, 'ingress.token'),
  ]);
  await mkdir(cipherRoot(), { recursive: true });
  await writeFile(join(cipherRoot(), DIRIV_NAME), randomBytes(16));
  const names = new NameTransform(volumeKey);
  const everyone = ['rex', 'pia', 'dora'];
  const filings = [
    await writeOutput(names, 'tables/admissions.csv', table(40), everyone),
    // Over a MiB, so the transfer is streamed in several pieces; not a table: checked by hand.
    await writeOutput(names, 'figures/by ward/länger.png', randomBytes(1_500_000), everyone),
    await writeOutput(names, 'summary.csv', table(12), everyone),
  ];
  expect(filings.map((f) => f.sdc.verdict)).toEqual(['pass', 'review', 'pass']);
  const draft = await as('rex').createEgress(P, 'Readmissions by ward');
  requestId = draft.id;
  await as('rex').putEgressFiles(P, requestId, filings);
  await as('rex').submitEgress(P, requestId);
}, 120_000);

afterAll(async () => {
  await ingress?.stop();
  killAll();
  await kms?.close(1000);
  await rm(dir, { recursive: true, force: true });
});

describe('tre download', () => {
  it('has --help and refuses bad arguments with exit code 2', async () => {
    const h = await tre(['download', '--help']).done;
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--passphrase-fd');
    expect(h.stdout).toContain('--force');
    const bad = await tre(['download', 'seven', '--project', P]).done;
    expect(bad.code).toBe(2);
  }, 60_000);

  it('refuses a request that is not released yet (exit 8), and the ingress serves nothing', async () => {
    const out = join(dir, 'out-early');
    const r = await tre(downloadArgs(out), PASS).done;
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/is submitted, not released/);
    const f = (await as('rex').egress(P, requestId)).files[0]!;
    const direct = await api(
      ingress.url,
      tokens.rex!,
      'GET',
      `/v1/projects/${P}/egress/${requestId}/files/${f.fileId}?path=x`,
    );
    expect(direct.status).toBe(409);
    expect(direct.json).toMatchObject({ error: { code: 'not_released' } });
  }, 60_000);

  it('downloads, verifies and decrypts every file once approved; only for the requester', async () => {
    const view = await as('rex').egress(P, requestId);
    for (const who of ['pia', 'dora']) {
      for (const f of view.files) await as(who).voteEgress(P, requestId, f.fileId, 'approve');
    }
    expect((await as('pia').decideEgress(P, requestId, 'approve')).state).toBe('approved');

    const wrong = await tre(downloadArgs(join(dir, 'out-wrong')), 'not it').done;
    expect(wrong.code).toBe(7);
    expect(wrong.stderr).not.toContain('not it');

    const out = join(dir, 'out');
    const r = await tre(downloadArgs(out), PASS).done;
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(r.stdout).toContain('3 files of egress request');
    expect(r.stdout + r.stderr).not.toContain(PASS);
    expect(await listAll(out)).toEqual(Object.keys(plain).sort());
    for (const [rel, content] of Object.entries(plain)) {
      expect((await readFile(join(out, rel))).equals(content)).toBe(true);
    }
    expect((await as('rex').egress(P, requestId)).state).toBe('released');

    // A reviewer, not the requester, gets nothing from the ingress.
    const f = view.files[0]!;
    const cipherPath = cipherFile[f.path]!.slice(cipherRoot().length + 1);
    const q = `/v1/projects/${P}/egress/${requestId}/files/${f.fileId}?path=${encodeURIComponent(cipherPath)}`;
    const pia = await api(ingress.url, tokens.pia!, 'GET', q);
    expect(pia.status).toBe(403);
    expect(pia.json).toMatchObject({ error: { code: 'not_requester' } });
    const own = await fetch(ingress.url + q, { headers: { Authorization: `token ${tokens.rex}` } });
    expect(own.status).toBe(200);
    expect(Buffer.from(await own.arrayBuffer()).equals(await readFile(cipherFile[f.path]!))).toBe(
      true,
    );
    // Paths cannot leave the project tree, and a file must be the one filed.
    for (const bad of ['../../ingress.sqlite', '..', 'a/../b', '/etc/passwd']) {
      const t = await api(
        ingress.url,
        tokens.rex!,
        'GET',
        `/v1/projects/${P}/egress/${requestId}/files/${f.fileId}?path=${encodeURIComponent(bad)}`,
      );
      expect(t.status).toBe(400);
    }
    const other = view.files.find((x) => x.fileId !== f.fileId)!;
    const swapped = await api(
      ingress.url,
      tokens.rex!,
      'GET',
      `/v1/projects/${P}/egress/${requestId}/files/${other.fileId}?path=${encodeURIComponent(cipherPath)}`,
    );
    expect(swapped.status).toBe(409);
    expect(swapped.json).toMatchObject({ error: { code: 'changed' } });

    // Existing files are not replaced without --force.
    const again = await tre(downloadArgs(out), PASS).done;
    expect(again.code).toBe(4);
    expect(again.stderr).toContain('--force');
  }, 120_000);

  it('refuses tampered ciphertext before decrypting (exit 6) and writes nothing', async () => {
    const rel = 'figures/by ward/länger.png';
    const original = await readFile(cipherFile[rel]!);
    const tampered = Buffer.from(original);
    tampered[HEADER_LEN + 100]! ^= 0x01;
    await writeFile(cipherFile[rel]!, tampered);
    try {
      const out = join(dir, 'out-tampered');
      const r = await tre(downloadArgs(out), PASS).done;
      expect(r.code).toBe(6);
      expect(r.stderr).toContain('hash mismatch');
      expect((await listAll(out).catch(() => [])).filter((p) => p.endsWith(rel))).toEqual([]);
      expect((await listAll(out).catch(() => [])).filter((p) => p.includes('.tmp'))).toEqual([]);
      // --force over good files: the good copy of the tampered file stays as it was.
      const kept = join(dir, 'out');
      const f = await tre(downloadArgs(kept, ['--force']), PASS).done;
      expect(f.code).toBe(6);
      expect((await readFile(join(kept, rel))).equals(plain[rel]!)).toBe(true);
      expect((await listAll(kept)).filter((p) => p.includes('.tmp'))).toEqual([]);
    } finally {
      await writeFile(cipherFile[rel]!, original);
    }
  }, 120_000);

  it('stops after a revocation (exit 8, ingress 410) and audits every fetch', async () => {
    await as('pia').revokeEgress(P, requestId);
    const r = await tre(downloadArgs(join(dir, 'out-revoked')), PASS).done;
    expect(r.code).toBe(8);
    expect(r.stderr).toContain('revoked');
    const f = (await as('rex').egress(P, requestId)).files[0]!;
    const cipherPath = cipherFile[f.path]!.slice(cipherRoot().length + 1);
    const direct = await api(
      ingress.url,
      tokens.rex!,
      'GET',
      `/v1/projects/${P}/egress/${requestId}/files/${f.fileId}?path=${encodeURIComponent(cipherPath)}`,
    );
    expect(direct.status).toBe(410);
    expect(direct.json).toMatchObject({ error: { code: 'revoked' } });
    // The service's log reaches this process through a pipe: give it a moment.
    for (let i = 0; i < 50 && !ingress.log.join('').includes('denied:revoked'); i++) {
      await sleep(100);
    }
    const log = ingress.log.join('');
    expect(log).toContain('"action":"egress.fetch"');
    expect(log).toContain('denied:revoked');
    expect(log).toContain('denied:not_requester');
    expect(log).not.toContain(PASS);
  }, 60_000);
});
