/**
 * Files staged by the ingress: registered `pending`, no key released until the ingress (a
 * trusted hub service) confirms them; on rejection their wrapped DEKs are destroyed and the
 * bytes are gone from the database file. Also the audit endpoints the other parts use (trefs'
 * filesystem events, the ingress's own events) and the project list the lab and spawner read.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import {
  decodePublicKey,
  dekContext,
  encodePublicKey,
  generateKeyPair,
  projectKeyContext,
  unwrapKey,
  volumeKeyContext,
  wrapKey,
  type KeyPair,
  type WrappedKey,
} from '@tre/crypto';
import { verifyAuditLines, type AuditEntry } from '../src/audit.js';
import type { KmsClient } from '../src/client.js';
import { onboard, startKms, type TestKms } from './helpers.js';

let t: TestKms;
const P = 'ingress-1';
let pi: { c: KmsClient; kp: KeyPair };
let dora: { c: KmsClient; kp: KeyPair };
let projectKp: KeyPair;
const files: Array<{ fileId: string; dek: Buffer; wrapped: WrappedKey }> = [];
let ingress: KmsClient;
let admin: KmsClient;

async function person(name: string) {
  const c = await onboard(t, name);
  const kp = await generateKeyPair();
  await c.addKek(encodePublicKey(kp));
  return { c, kp };
}

beforeAll(async () => {
  t = await startKms();
  pi = await person('pia');
  dora = await person('dora');
  await person('outsider');
  ingress = t.as('ingress', false, true);
  admin = t.as('admin', true);
  await pi.c.proposeProject({ id: P, title: 'Ingress study' });
  await pi.c.addMember(P, { username: 'dora', role: 'data_owner' });
  projectKp = await generateKeyPair();
  await pi.c.publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(randomBytes(32), projectKp, volumeKeyContext(P)),
    wraps: [
      {
        username: 'pia',
        wrapped: await wrapKey(projectKp.privateKey, pi.kp, projectKeyContext(P, 1)),
      },
      {
        username: 'dora',
        wrapped: await wrapKey(projectKp.privateKey, dora.kp, projectKeyContext(P, 1)),
      },
    ],
  });
  await dora.c.consent(P);
  const pub = decodePublicKey((await dora.c.project(P)).publicKey!.publicKey);
  for (let i = 0; i < 3; i++) {
    const fileId = randomBytes(16).toString('hex');
    const dek = randomBytes(32);
    files.push({ fileId, dek, wrapped: await wrapKey(dek, pub, dekContext(P, fileId)) });
  }
});

afterAll(async () => {
  await t?.stop();
});

const reg = (f: (typeof files)[number]) => ({
  fileId: f.fileId,
  size: 4096,
  sha256: randomBytes(32).toString('hex'),
  epoch: 1,
  wrapped: f.wrapped,
});

describe('pending files', () => {
  test('registered pending: no key leaves the KMS, not singly, not in the stream', async () => {
    const [a, b, c] = files as [(typeof files)[0], (typeof files)[0], (typeof files)[0]];
    expect(await dora.c.registerFiles(P, [reg(a), reg(b)], { state: 'pending' })).toEqual({
      registered: 2,
      state: 'pending',
    });
    expect(await dora.c.registerFiles(P, [reg(c)])).toEqual({ registered: 1, state: 'visible' });
    await expect(dora.c.fileKey(P, a.fileId)).rejects.toMatchObject({
      status: 409,
      code: 'file_pending',
    });
    await expect(pi.c.fileKey(P, b.fileId)).rejects.toMatchObject({ code: 'file_pending' });
    const streamed = [];
    for await (const k of pi.c.fileKeys(P)) streamed.push(k.fileId);
    expect(streamed).toEqual([c.fileId]);
    const denied = t.server.kms.db
      .prepare("SELECT COUNT(*) AS n FROM audit_log WHERE result = 'denied:file_pending'")
      .get() as { n: number };
    expect(denied.n).toBe(2);
  });

  test('only a trusted service or a hub admin confirms', async () => {
    const a = files[0]!;
    for (const who of [dora.c, pi.c, t.as('outsider')]) {
      await expect(who.confirmFiles(P, [a.fileId])).rejects.toMatchObject({
        status: 403,
        reason: 'service_required',
      });
    }
    await expect(dora.c.fileKey(P, a.fileId)).rejects.toMatchObject({ code: 'file_pending' });
  });

  test('confirmed by the ingress, the DEK is released and unwraps', async () => {
    const a = files[0]!;
    expect(await ingress.confirmFiles(P, [a.fileId, files[2]!.fileId])).toEqual({
      confirmed: 1,
      alreadyVisible: 1,
    });
    const rel = await dora.c.fileKey(P, a.fileId);
    const mine = await dora.c.projectKey(P);
    const projectPriv = await unwrapKey(mine.wrapped!, dora.kp, projectKeyContext(P, 1));
    const dek = await unwrapKey(
      rel.wrapped,
      { ...projectKp, privateKey: projectPriv },
      dekContext(P, a.fileId),
    );
    expect(Buffer.from(dek).equals(a.dek)).toBe(true);
    // Confirming again changes nothing and logs nothing new.
    expect(await ingress.confirmFile(P, a.fileId)).toEqual({ confirmed: 0, alreadyVisible: 1 });
  });

  test('a batch naming an unknown file changes nothing', async () => {
    const b = files[1]!;
    await expect(
      ingress.confirmFiles(P, [b.fileId, randomBytes(16).toString('hex')]),
    ).rejects.toMatchObject({ status: 404 });
    await expect(dora.c.fileKey(P, b.fileId)).rejects.toMatchObject({ code: 'file_pending' });
    await expect(ingress.confirmFiles(P, [b.fileId, b.fileId])).rejects.toMatchObject({
      status: 400,
      code: 'duplicate_file',
    });
  });

  test('rejection destroys the key: gone from the API and from the database bytes', async () => {
    const b = files[1]!;
    const db = t.config.database;
    expect(readFileSync(db).includes(b.wrapped.ct) || walHas(db, b.wrapped.ct)).toBe(true);
    expect(await ingress.destroyFiles(P, [b.fileId])).toMatchObject({ destroyed: 1 });
    expect(readFileSync(db).includes(b.wrapped.ct)).toBe(false);
    expect(walHas(db, b.wrapped.ct)).toBe(false);
    await expect(dora.c.fileKey(P, b.fileId)).rejects.toMatchObject({ status: 404 });
    await expect(ingress.confirmFile(P, b.fileId)).rejects.toMatchObject({
      status: 409,
      code: 'file_destroyed',
    });
    await expect(dora.c.registerFiles(P, [reg(b)])).rejects.toMatchObject({
      code: 'duplicate_file',
    });
    expect(await ingress.destroyFile(P, b.fileId)).toMatchObject({
      destroyed: 0,
      alreadyDestroyed: 1,
    });
  });

  test('a service cannot destroy a confirmed file; a hub admin can', async () => {
    const a = files[0]!;
    await expect(ingress.destroyFile(P, a.fileId)).rejects.toMatchObject({
      status: 409,
      code: 'not_pending',
    });
    await expect(dora.c.destroyFile(P, a.fileId)).rejects.toMatchObject({
      reason: 'service_required',
    });
    expect(await admin.destroyFile(P, a.fileId)).toMatchObject({ destroyed: 1 });
    await expect(dora.c.fileKey(P, a.fileId)).rejects.toMatchObject({ status: 404 });
  });
});

function walHas(db: string, needle: string): boolean {
  return existsSync(`${db}-wal`) && readFileSync(`${db}-wal`).includes(needle);
}

describe('audit events from the other parts', () => {
  const now = () => new Date().toISOString();

  test("a session's filesystem events become audit entries of the member", async () => {
    const r = await dora.c.appendFsEvents(
      P,
      [
        {
          op: 'create',
          path: 'out/table 1.csv',
          pid: 4242,
          exe: '/usr/bin/python3.12',
          time: now(),
        },
        {
          op: 'open',
          path: 'data/cohort.parquet',
          pid: 4242,
          exe: '/usr/bin/python3.12',
          time: now(),
        },
        {
          op: 'rename',
          path: 'out/table 1.csv',
          to: 'out/final "v2".csv',
          pid: 4243,
          exe: '/usr/bin/mv',
          time: now(),
        },
        { op: 'unlink', path: 'tmp/x', pid: 1, exe: '/usr/bin/rm', time: now() },
      ],
      'job-77',
    );
    expect(r.appended).toBe(4);
    const rows = t.server.kms.db
      .prepare('SELECT actor, action, object FROM audit_log WHERE seq > ? ORDER BY seq')
      .all(r.seq - 4) as Array<{ actor: string; action: string; object: string }>;
    expect(rows.map((x) => [x.actor, x.action])).toEqual([
      ['dora', 'fs.create'],
      ['dora', 'fs.open'],
      ['dora', 'fs.rename'],
      ['dora', 'fs.unlink'],
    ]);
    expect(rows[2]!.object).toContain(
      'path:"out/table 1.csv" to:"out/final \\"v2\\".csv" pid:4243',
    );
    expect(rows[1]!.object).toMatch(
      /^project:ingress-1 path:"data\/cohort.parquet" pid:4242 exe:"\/usr\/bin\/python3.12" at:\S+ session:job-77$/,
    );
  });

  test('bad events are refused whole, non-members are refused', async () => {
    const head = t.server.kms.audit.head().seq;
    const ok = { op: 'open' as const, path: 'a', pid: 1, exe: '/bin/cat', time: now() };
    const bad: unknown[] = [
      { ...ok, op: 'chmod' },
      { ...ok, path: 'a\nproject:other' },
      { ...ok, path: '' },
      { ...ok, pid: -1 },
      { ...ok, time: 'yesterday' },
      { ...ok, extra: 1 },
    ];
    for (const e of bad) {
      await expect(dora.c.appendFsEvents(P, [ok, e as typeof ok])).rejects.toMatchObject({
        status: 400,
      });
    }
    await expect(
      dora.c.appendFsEvents(
        P,
        Array.from({ length: 1001 }, () => ok),
      ),
    ).rejects.toMatchObject({ status: 400 });
    expect(t.server.kms.audit.head().seq).toBe(head);
    await expect(t.as('outsider').appendFsEvents(P, [ok])).rejects.toMatchObject({
      status: 403,
      reason: 'not_a_member',
    });
    await expect(ingress.appendFsEvents(P, [ok])).rejects.toMatchObject({
      reason: 'user_required',
    });
  });

  test('the audit log tells the ingress story and verifies', async () => {
    await ingress.appendAuditEvents([
      { action: 'ingress.reject', object: `project:${P} ingress:7`, result: 'ok', user: 'pia' },
    ]);
    await expect(
      ingress.appendAuditEvents([{ action: 'Not An Action', object: 'x' }]),
    ).rejects.toMatchObject({ status: 400 });
    const lines = (await admin.exportAudit()).trimEnd().split('\n');
    const pem = await admin.auditPublicKey();
    expect(verifyAuditLines(lines, { publicKeyPem: pem })).toMatchObject({ ok: true });
    const entries = lines
      .slice(1)
      .map((l) => JSON.parse(l) as AuditEntry & { checkpoint?: unknown })
      .filter((e) => !e.checkpoint);
    const story = entries
      .filter((e) => /^(file\.|ingress\.)/.test(e.action))
      .map((e) => `${e.actor} ${e.action} ${e.result}`);
    expect(story).toEqual([
      'dora file.register ok',
      'dora file.register ok',
      'dora file.confirm denied:service_required',
      'pia file.confirm denied:service_required',
      'outsider file.confirm denied:service_required',
      'service:ingress file.confirm ok',
      'service:ingress file.destroy ok',
      'dora file.destroy denied:service_required',
      'admin file.destroy ok',
      'service:ingress ingress.reject ok',
    ]);
  });
});

describe('my projects', () => {
  test('what the picker and the spawner form read', async () => {
    const [p] = await dora.c.myProjects();
    expect(p).toMatchObject({
      id: P,
      title: 'Ingress study',
      pi: 'pia',
      role: 'data_owner',
      roles: ['data_owner'],
      state: 'active',
      consent: { complete: true, dataOwners: [{ username: 'dora' }] },
      window: { validFrom: null, validUntil: null, open: true },
      epoch: 1,
      keyWrapped: true,
      keyRelease: { allowed: true, reason: null },
      awaitingGrant: null,
      grantsToComplete: [],
    });
    // A newcomer waits for a grant; the PI sees it among the grants they can complete.
    const rex = await person('rex');
    await pi.c.addMember(P, { username: 'rex', role: 'researcher' });
    const [r] = await rex.c.myProjects();
    expect(r).toMatchObject({ role: 'researcher', keyWrapped: false, awaitingGrant: { epoch: 1 } });
    const [forPi] = await pi.c.myProjects();
    expect(forPi!.grantsToComplete).toMatchObject([
      {
        username: 'rex',
        role: 'researcher',
        epoch: 1,
        kek: { publicKey: encodePublicKey(rex.kp) },
      },
    ]);
    // A new KEK: the old wrap is no longer to the current key.
    await dora.c.addKek(encodePublicKey(await generateKeyPair()));
    expect((await dora.c.myProjects())[0]!.keyWrapped).toBe(false);
    expect(await t.as('outsider').myProjects()).toEqual([]);
  });
});
