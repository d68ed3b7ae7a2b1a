/**
 * End to end with the real crypto: PI proposes, data owner consents, a wrapped DEK is stored, a
 * researcher's pending grant is completed by the PI's client, the researcher unwraps the DEK with
 * their own KEK; the window ends; the project closes; the audit log tells it all. Then the
 * database and the logs are searched for every secret the clients handled.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  decodePublicKey,
  decryptKeyFile,
  dekContext,
  encodePublicKey,
  encryptKeyFile,
  generateKeyPair,
  projectKeyContext,
  publicKeyFromPrivate,
  unwrapKey,
  volumeKeyContext,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import { verifyAuditLines, type AuditEntry } from '../src/audit.js';
import type { KmsClient } from '../src/client.js';
import { DAY, onboard, startKms, type TestKms } from './helpers.js';

let t: TestKms;
let logFile: string;
const secrets: Array<{ what: string; bytes: Buffer }> = [];
const P = 'cohort-1';

beforeAll(async () => {
  const dir = join((await import('node:os')).tmpdir(), `tre-kms-e2e-log-${process.pid}`);
  logFile = `${dir}.log`;
  t = await startKms({ logDestination: logFile, logLevel: 'trace' });
});

afterAll(async () => {
  await t?.stop();
  rmSync(logFile, { force: true });
});

function remember(what: string, bytes: Uint8Array): void {
  secrets.push({ what, bytes: Buffer.from(bytes) });
}

/** A user's side: KEK generated locally, key file encrypted under a passphrase, stored in the KMS. */
async function person(name: string): Promise<{ c: KmsClient; kp: KeyPair; passphrase: string }> {
  const c = await onboard(t, name);
  const kp = await generateKeyPair();
  const passphrase = `pass-${name}-${randomBytes(12).toString('hex')}`;
  remember(`${name} KEK private key`, kp.privateKey);
  remember(`${name} passphrase`, Buffer.from(passphrase));
  await c.addKek(encodePublicKey(kp));
  await c.putKeyFile(await encryptKeyFile(kp, passphrase, { scrypt: { N: 1 << 14, r: 8, p: 1 } }));
  return { c, kp, passphrase };
}

test('the whole story, and nothing secret left behind', async () => {
  const pi = await person('pia');
  const owner = await person('dora');
  const researcher = await person('rex');
  const admin = t.as('admin', true);

  // PI proposes and invites the data owner; the PI's client makes the project key and volume key.
  await pi.c.proposeProject({ id: P, title: 'Cohort study', description: 'readmissions' });
  await pi.c.addMember(P, { username: 'dora', role: 'data_owner' });
  const projectKp = await generateKeyPair();
  const volumeKey = randomBytes(32);
  remember('project private key', projectKp.privateKey);
  remember('volume key', volumeKey);
  const wrapFor = async (u: string, kp: KeyPair) => ({
    username: u,
    wrapped: await wrapKey(projectKp.privateKey, kp, projectKeyContext(P, 1)),
  });
  await pi.c.publishEpoch(P, {
    epoch: 1,
    publicKey: encodePublicKey(projectKp),
    volumeKey: await wrapKey(volumeKey, projectKp, volumeKeyContext(P)),
    wraps: [await wrapFor('pia', pi.kp), await wrapFor('dora', owner.kp)],
  });

  // Nothing is released before the data owner consents.
  await expect(pi.c.projectKey(P)).rejects.toMatchObject({
    status: 403,
    reason: 'project_not_consented',
  });
  expect((await owner.c.consent(P)).state).toBe('active');

  // The data owner's uploader encrypts locally and registers the wrapped DEK.
  const fileId = randomBytes(16).toString('hex');
  const dek = randomBytes(32);
  remember('file DEK', dek);
  const project = await owner.c.project(P);
  const projectPub = decodePublicKey(project.publicKey!.publicKey);
  await owner.c.registerFiles(P, [
    {
      fileId,
      size: 4096,
      sha256: randomBytes(32).toString('hex'),
      epoch: 1,
      wrapped: await wrapKey(dek, projectPub, dekContext(P, fileId)),
    },
  ]);

  // The researcher joins: a pending grant that the KMS alone cannot complete.
  const windowEnd = new Date(t.clock.now.getTime() + 10 * DAY).toISOString();
  const added = await pi.c.addMember(P, {
    username: 'rex',
    role: 'researcher',
    validUntil: windowEnd,
  });
  expect(added.grantId).not.toBeNull();
  await expect(researcher.c.projectKey(P)).rejects.toMatchObject({ status: 404, code: 'no_grant' });

  // The PI's client completes it: unwrap its own copy, wrap to the newcomer's KEK.
  const [grant] = await pi.c.grants(P);
  expect(grant).toMatchObject({ username: 'rex', epoch: 1 });
  const mine = await pi.c.projectKey(P);
  const projectPriv = await unwrapKey(mine.wrapped!, pi.kp, projectKeyContext(P, 1));
  const rebuilt = await publicKeyFromPrivate('x25519', projectPriv);
  const rexKek = decodePublicKey(grant!.kek!.publicKey);
  await pi.c.completeGrant(
    P,
    grant!.id,
    await wrapKey(rebuilt.privateKey, rexKek, projectKeyContext(P, 1)),
  );
  expect(await pi.c.grants(P)).toEqual([]);

  // The researcher, on a fresh machine: key file + passphrase -> KEK -> project key -> DEK.
  const kek = await decryptKeyFile(await researcher.c.getKeyFile(), researcher.passphrase);
  const rel = await researcher.c.projectKey(P);
  const rexProject = await publicKeyFromPrivate(
    'x25519',
    await unwrapKey(rel.wrapped!, kek, projectKeyContext(P, 1)),
  );
  expect(rexProject.kid).toBe(projectKp.kid);
  const fk = await researcher.c.fileKey(P, fileId);
  const dekAgain = await unwrapKey(fk.wrapped, rexProject, dekContext(P, fileId));
  expect(Buffer.from(dekAgain).equals(dek)).toBe(true);
  const vol = await unwrapKey(rel.volumeKey!, rexProject, volumeKeyContext(P));
  expect(Buffer.from(vol).equals(volumeKey)).toBe(true);
  const streamed = [];
  for await (const r of researcher.c.fileKeys(P)) streamed.push(r);
  expect(streamed).toEqual([{ fileId, epoch: 1, wrapped: fk.wrapped }]);

  // The window ends: nothing more for the researcher, the PI still gets keys.
  t.clock.now = new Date(Date.parse(windowEnd) + 1000);
  await expect(researcher.c.fileKey(P, fileId)).rejects.toMatchObject({
    status: 403,
    reason: 'outside_window',
  });
  await expect(researcher.c.projectKey(P)).rejects.toMatchObject({ reason: 'outside_window' });
  await pi.c.fileKey(P, fileId);

  // Closure shreds every wrapped key; nothing is released to anyone afterwards.
  const closed = await owner.c.closeProject(P);
  expect(closed.state).toBe('closed');
  expect(closed.shredded).toBeGreaterThanOrEqual(4);
  for (const c of [pi.c, owner.c]) {
    await expect(c.projectKey(P)).rejects.toMatchObject({ reason: 'project_closed' });
    await expect(c.fileKey(P, fileId)).rejects.toMatchObject({ reason: 'project_closed' });
  }
  const db = t.server.kms.db;
  expect(
    db.prepare('SELECT COUNT(*) AS n FROM project_key_wraps WHERE project_id = ?').get(P),
  ).toEqual({ n: 0 });
  expect(
    db
      .prepare('SELECT COUNT(*) AS n FROM files WHERE project_id = ? AND wrapped IS NOT NULL')
      .get(P),
  ).toEqual({ n: 0 });

  // The audit log verifies against the signing key and tells the story in order.
  const exported = (await admin.exportAudit()).trimEnd().split('\n');
  const pem = await admin.auditPublicKey();
  expect(verifyAuditLines(exported, { publicKeyPem: pem })).toMatchObject({ ok: true });
  const story = exported
    .slice(1)
    .map((l) => JSON.parse(l) as AuditEntry & { checkpoint?: unknown })
    .filter((e) => !e.checkpoint && e.object.includes(P))
    .map((e) => `${e.actor} ${e.action} ${e.result}`);
  expect(story).toEqual([
    'pia project.propose ok',
    'pia member.add ok',
    'pia epoch.publish ok',
    'pia grant.wrap ok',
    'pia grant.wrap ok',
    'pia project_key.release denied:project_not_consented',
    'dora project.consent ok',
    'dora file.register ok',
    'pia member.add ok',
    'pia grant.create ok',
    'rex project_key.release denied:no_grant',
    'pia project_key.release ok',
    'pia grant.complete ok',
    'rex project_key.release ok',
    'rex file_key.release ok',
    'rex file_key.release_batch ok',
    'rex file_key.release denied:outside_window',
    'rex project_key.release denied:outside_window',
    'pia file_key.release ok',
    'dora project.close ok',
    'pia project_key.release denied:project_closed',
    'pia file_key.release denied:project_closed',
    'dora project_key.release denied:project_closed',
    'dora file_key.release denied:project_closed',
  ]);

  // A leaked database (file, WAL, audit key directory) and the logs hold none of the secrets.
  await t.server.close(1000);
  const files = readdirSync(t.dir).map((f) => join(t.dir, f));
  files.push(logFile);
  const haystacks = files.map((f) => ({ f, data: readFileSync(f) }));
  expect(haystacks.find((h) => h.f === logFile)!.data.length).toBeGreaterThan(1000);
  for (const s of secrets) {
    const needles = [
      s.bytes,
      Buffer.from(s.bytes.toString('hex')),
      Buffer.from(s.bytes.toString('base64')),
      Buffer.from(s.bytes.toString('base64url')),
    ];
    for (const h of haystacks) {
      for (const n of needles) {
        expect({ secret: s.what, file: h.f, found: h.data.includes(n) }).toEqual({
          secret: s.what,
          file: h.f,
          found: false,
        });
      }
    }
  }
  // The scan itself can find what is there: the public project key is stored in the clear.
  const pub = Buffer.from(encodePublicKey(projectKp));
  expect(haystacks.some((h) => h.data.includes(pub))).toBe(true);
});
