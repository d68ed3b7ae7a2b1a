/**
 * The egress workflow end to end with the real crypto: a researcher files one passing and one
 * failing table (encrypted with per-file DEKs, as in the export folder), the PI and the data owner
 * decrypt and review them with their own KEKs, the failing table goes back and returns fixed,
 * both approve, the requester alone obtains the release, unwraps and decrypts; revocation stops
 * it; the audit log verifies and tells the story.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  decryptFile,
  egressContext,
  encodePublicKey,
  encryptFile,
  generateKeyPair,
  HEADER_LEN,
  parseHeader,
  unwrapKey,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import { verifyAuditLines, type AuditEntry } from '../src/audit.js';
import type { EgressFiling, KmsClient } from '../src/client.js';
import { checkFile } from '../src/sdc/check.js';
import { onboard, startKms, type TestKms } from './helpers.js';

const P = 'outputs-1';
let t: TestKms;
let dir: string;
let written = 0;
/** Every DEK and plaintext the clients handled: none may reach the KMS's files. */
const secrets: Buffer[] = [];

beforeAll(async () => {
  t = await startKms();
  dir = mkdtempSync(join(tmpdir(), 'tre-egress-'));
});

afterAll(async () => {
  await t?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function person(name: string): Promise<{ c: KmsClient; kp: KeyPair }> {
  const c = await onboard(t, name);
  const kp = await generateKeyPair();
  await c.addKek(encodePublicKey(kp));
  return { c, kp };
}

/** What the lab extension does when filing: check, encrypt, hash the ciphertext, wrap the DEK. */
async function prepare(
  name: string,
  text: string,
  recipients: Array<[string, KeyPair]>,
): Promise<{ filing: EgressFiling; cipherPath: string }> {
  const local = join(dir, `${++written}-${name.replace(/\//g, '_')}`);
  const plain = local;
  const cipherPath = `${local}.enc`;
  writeFileSync(plain, text);
  const dek = randomBytes(32);
  secrets.push(dek, Buffer.from(text));
  await encryptFile(dek, plain, cipherPath);
  const ct = readFileSync(cipherPath);
  const fileId = parseHeader(ct.subarray(0, HEADER_LEN)).toString('hex');
  const keys = [];
  for (const [u, kp] of recipients) {
    keys.push({ username: u, wrapped: await wrapKey(dek, kp, egressContext(P, fileId, u)) });
  }
  return {
    cipherPath,
    filing: {
      fileId,
      path: name,
      size: ct.length,
      sha256: createHash('sha256').update(ct).digest('hex'),
      sdc: checkFile(name, text),
      keys,
    },
  };
}

const PASSING = 'ward,admitted,discharged\nA,120,98\nB,45,51\n';
const FAILING = 'ward,admitted,discharged\nA,120,98\nB,4,51\n';
const FIXED = 'ward,admitted,discharged\nA+B,124,149\n';

test('file, review, return, approve, release, download, revoke', async () => {
  const pi = await person('pia');
  const owner = await person('dora');
  const rex = await person('rex');
  await pi.c.proposeProject({ id: P, title: 'Outputs' });
  await pi.c.addMember(P, { username: 'dora', role: 'data_owner' });
  await pi.c.addMember(P, { username: 'rex', role: 'researcher' });
  await owner.c.consent(P);

  const everyone: Array<[string, KeyPair]> = [
    ['rex', rex.kp],
    ['pia', pi.kp],
    ['dora', owner.kp],
  ];
  const good = await prepare('tables/admissions.csv', PASSING, everyone);
  const bad = await prepare('tables/small.csv', FAILING, everyone);
  expect(good.filing.sdc.verdict).toBe('pass');
  expect(bad.filing.sdc.verdict).toBe('fail');

  const draft = await rex.c.createEgress(P, 'Admissions by ward');
  const id = draft.id;
  expect(draft.state).toBe('draft');
  // Filing without the data owner's key is refused: the KMS checks one wrap per reviewer.
  await rex.c.putEgressFiles(P, id, [
    { ...good.filing, keys: good.filing.keys.filter((k) => k.username !== 'dora') },
  ]);
  await expect(rex.c.submitEgress(P, id)).rejects.toMatchObject({
    status: 409,
    code: 'missing_keys',
  });
  // A record checked with laxer rules, or one whose verdict contradicts its cells, is refused.
  await expect(
    rex.c.putEgressFiles(P, id, [
      { ...bad.filing, sdc: checkFile(bad.filing.path, FAILING, { parameters: { threshold: 3 } }) },
    ]),
  ).rejects.toMatchObject({ status: 400, code: 'invalid_sdc' });
  await expect(
    rex.c.putEgressFiles(P, id, [{ ...bad.filing, sdc: { ...bad.filing.sdc, verdict: 'pass' } }]),
  ).rejects.toMatchObject({ status: 400, code: 'invalid_sdc' });
  await rex.c.putEgressFiles(P, id, [good.filing, bad.filing]);
  const cell = bad.filing.sdc.cells.find((c) => c.verdict === 'fail')!;
  expect(cell.ref).toBe('B/admitted');
  await rex.c.justifyEgress(P, id, {
    fileId: bad.filing.fileId,
    cell: cell.ref,
    rule: 'threshold',
    text: 'ward B is a whole hospital',
  });
  await expect(
    rex.c.justifyEgress(P, id, {
      fileId: good.filing.fileId,
      cell: 'A/admitted',
      rule: 'threshold',
      text: 'x',
    }),
  ).rejects.toMatchObject({ status: 400, code: 'no_such_check' });
  const todo = async (who: { c: KmsClient }) =>
    (await who.c.myReviews()).map((r) => [r.projectId, r.id, r.todo, r.files]);
  expect(await todo(pi)).toEqual([]);
  const submitted = await rex.c.submitEgress(P, id);
  expect(submitted.state).toBe('submitted');
  expect(await todo(pi)).toEqual([[P, id, 'vote', 2]]);
  expect(await todo(owner)).toEqual([[P, id, 'vote', 2]]);
  expect(await todo(rex)).toEqual([]);
  // Frozen: the manifest cannot change while in review.
  await expect(rex.c.putEgressFiles(P, id, [good.filing])).rejects.toMatchObject({
    status: 409,
    reason: 'wrong_state',
  });

  // Each reviewer decrypts with their own KEK and sees the record beside the plaintext.
  for (const [name, who] of [
    ['pia', pi],
    ['dora', owner],
  ] as const) {
    const view = await who.c.egress(P, id);
    const f = view.files.find((x) => x.path === 'tables/small.csv')!;
    expect(f.sdc.verdict).toBe('fail');
    expect(f.justifications).toEqual([
      { cell: 'B/admitted', rule: 'threshold', text: 'ward B is a whole hospital', author: 'rex' },
    ]);
    const k = await who.c.egressReviewKey(P, id, f.fileId);
    const dek = await unwrapKey(k.wrapped, who.kp, egressContext(P, f.fileId, name));
    const out = join(dir, `review-${name}.csv`);
    await decryptFile(dek, bad.cipherPath, out);
    expect(readFileSync(out, 'utf8')).toBe(FAILING);
    expect(checkFile(f.path, readFileSync(out, 'utf8'))).toEqual(f.sdc);
  }

  await pi.c.voteEgress(P, id, good.filing.fileId, 'approve');
  let v = await pi.c.voteEgress(P, id, bad.filing.fileId, 'approve');
  expect(v.state).toBe('partially_reviewed');
  expect(await todo(pi)).toEqual([]);
  expect(await todo(owner)).toEqual([[P, id, 'vote', 2]]);
  await expect(pi.c.decideEgress(P, id, 'approve')).rejects.toMatchObject({
    status: 409,
    reason: 'wrong_state',
  });
  await owner.c.voteEgress(P, id, good.filing.fileId, 'approve');
  v = await owner.c.voteEgress(P, id, bad.filing.fileId, 'request_changes');
  expect(v.state).toBe('reviewed');
  expect(await todo(pi)).toEqual([[P, id, 'decide', 2]]);
  expect((await owner.c.myReviews())[0]).toMatchObject({
    projectTitle: expect.any(String),
    requester: 'rex',
    state: 'reviewed',
    round: 1,
  });
  await expect(owner.c.decideEgress(P, id, 'approve')).rejects.toMatchObject({
    status: 409,
    code: 'changes_requested',
  });
  await owner.c.commentEgress(P, id, {
    text: 'B is below 10',
    fileId: bad.filing.fileId,
    visibility: 'requester',
  });
  await owner.c.commentEgress(P, id, { text: 'note to PI only' });
  const seen = await rex.c.egress(P, id);
  expect(seen.comments.map((c) => c.text)).toEqual(['B is below 10']);
  expect((await pi.c.egress(P, id)).comments.map((c) => c.text)).toEqual([
    'B is below 10',
    'note to PI only',
  ]);
  expect((await owner.c.decideEgress(P, id, 'return')).state).toBe('returned');
  expect(await todo(owner)).toEqual([]);
  await expect(
    rex.c.commentEgress(P, id, { text: 'private?', visibility: 'reviewers' }),
  ).rejects.toMatchObject({ status: 400, code: 'invalid_visibility' });
  await rex.c.commentEgress(P, id, { text: 'wards merged' });
  expect((await pi.c.egress(P, id)).comments.map((c) => [c.author, c.text])).toContainEqual([
    'rex',
    'wards merged',
  ]);

  // The fixed table needs a new manifest entry (new ciphertext, new hash, new keys).
  const fixed = await prepare('tables/small.csv', FIXED, everyone);
  expect(fixed.filing.sdc.verdict).toBe('pass');
  await rex.c.putEgressFiles(P, id, [good.filing, fixed.filing]);
  const again = await rex.c.submitEgress(P, id);
  expect(again).toMatchObject({ state: 'submitted', round: 2 });
  expect(again.files.every((f) => f.votes.length === 0)).toBe(true);
  for (const who of [pi, owner]) {
    await expect(rex.c.releaseEgress(P, id)).rejects.toMatchObject({ reason: 'wrong_state' });
    for (const f of [good.filing, fixed.filing]) await who.c.voteEgress(P, id, f.fileId, 'approve');
  }
  expect((await pi.c.decideEgress(P, id, 'approve')).state).toBe('approved');

  // Only the requester obtains the release.
  await expect(pi.c.releaseEgress(P, id)).rejects.toMatchObject({
    status: 403,
    reason: 'not_requester',
  });
  const rel = await rex.c.releaseEgress(P, id);
  expect(rel.files.map((f) => f.path)).toEqual(['tables/admissions.csv', 'tables/small.csv']);
  for (const f of rel.files) {
    const src = f.path === 'tables/small.csv' ? fixed : good;
    const ct = readFileSync(src.cipherPath);
    // The download checks the ciphertext against the frozen manifest before decrypting.
    expect(createHash('sha256').update(ct).digest('hex')).toBe(f.sha256);
    expect(ct.length).toBe(f.size);
    const dek = await unwrapKey(f.wrapped, rex.kp, egressContext(P, f.fileId, 'rex'));
    const out = join(dir, `released-${f.fileId}.csv`);
    await decryptFile(dek, src.cipherPath, out);
    expect(readFileSync(out, 'utf8')).toBe(f.path === 'tables/small.csv' ? FIXED : PASSING);
  }
  expect((await rex.c.egress(P, id)).state).toBe('released');
  await rex.c.releaseEgress(P, id);

  expect((await owner.c.revokeEgress(P, id)).state).toBe('revoked');
  await expect(rex.c.releaseEgress(P, id)).rejects.toMatchObject({
    status: 409,
    reason: 'wrong_state',
  });
  expect(
    t.server.kms.db
      .prepare('SELECT COUNT(*) AS n FROM egress_file_keys WHERE request_id = ?')
      .get(id),
  ).toEqual({ n: 0 });

  const admin = t.as('admin', true);
  const lines = (await admin.exportAudit()).trimEnd().split('\n');
  expect(verifyAuditLines(lines, { publicKeyPem: await admin.auditPublicKey() })).toMatchObject({
    ok: true,
  });
  const story = lines
    .slice(1)
    .map((l) => JSON.parse(l) as AuditEntry & { checkpoint?: unknown })
    .filter((e) => !e.checkpoint && e.action.startsWith('egress.'))
    .map((e) => `${e.actor} ${e.action} ${e.result}`);
  expect(story).toEqual([
    'rex egress.create ok',
    'rex egress.manifest ok',
    'rex egress.manifest ok',
    'rex egress.justify ok',
    'rex egress.submit ok',
    'rex egress.edit denied:wrong_state',
    'pia egress.review_key ok',
    'dora egress.review_key ok',
    'pia egress.vote ok',
    'pia egress.vote ok',
    'pia egress.reviewed ok',
    'pia egress.approve denied:wrong_state',
    'dora egress.vote ok',
    'dora egress.vote ok',
    'dora egress.reviewed ok',
    'dora egress.comment ok',
    'dora egress.comment ok',
    'dora egress.return ok',
    'rex egress.reply ok',
    'rex egress.manifest ok',
    'rex egress.submit ok',
    'rex egress.release denied:wrong_state',
    'pia egress.vote ok',
    'pia egress.vote ok',
    'pia egress.reviewed ok',
    'rex egress.release denied:wrong_state',
    'dora egress.vote ok',
    'dora egress.vote ok',
    'dora egress.reviewed ok',
    'pia egress.approve ok',
    'pia egress.release denied:not_requester',
    'rex egress.release ok',
    'rex egress.download ok',
    'dora egress.revoke ok',
    'rex egress.release denied:wrong_state',
  ]);

  // The database and its WAL hold no DEK and no plaintext, in any encoding.
  await t.server.close(1000);
  const stored = readdirSync(t.dir).map((f) => readFileSync(join(t.dir, f)));
  expect(stored.some((d) => d.includes(Buffer.from(encodePublicKey(rex.kp))))).toBe(true);
  for (const s of secrets) {
    for (const needle of [
      s,
      Buffer.from(s.toString('hex')),
      Buffer.from(s.toString('base64url')),
    ]) {
      expect(stored.some((d) => d.includes(needle))).toBe(false);
    }
  }
});
