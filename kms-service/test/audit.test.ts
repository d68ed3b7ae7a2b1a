import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import {
  AuditLog,
  AuditSigner,
  entryHash,
  exportLines,
  verifyAuditLines,
  type AuditEntry,
} from '../src/audit.js';
import { migrate, openDatabase, type Db } from '../src/db.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

let dir: string;
let db: Db;
let signer: AuditSigner;
let lines: string[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tre-kms-audit-'));
  db = openDatabase(join(dir, 'kms.sqlite'));
  migrate(db);
  signer = AuditSigner.loadOrCreate(join(dir, 'audit-key.pem'));
  const log = new AuditLog(db, signer, { checkpointEvery: 50 });
  for (let i = 1; i <= 120; i++) {
    log.append({
      actor: `user${i % 7}`,
      action: 'file_key.release',
      object: `project:p file:${i}`,
      result: 'ok',
    });
  }
  log.checkpoint();
  lines = [...exportLines(db, signer.publicKeyPem())];
});

afterAll(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

const lineOf = (ls: string[], seq: number): number =>
  ls.findIndex((l) => {
    const o = JSON.parse(l) as { seq?: number };
    return o.seq === seq;
  });

const entryAt = (ls: string[], i: number): AuditEntry => JSON.parse(ls[i]!) as AuditEntry;

function rehash(e: AuditEntry): AuditEntry {
  return { ...e, hash: entryHash({ ...e, hash: undefined } as Omit<AuditEntry, 'hash'>) };
}

test('an untouched export verifies, with checkpoints every 50 entries and at the head', () => {
  const r = verifyAuditLines(lines, { publicKeyPem: signer.publicKeyPem() });
  expect(r).toMatchObject({ ok: true, entries: 120, checkpoints: 3, signedSeq: 120 });
});

test('the audit table refuses updates and deletes', () => {
  expect(() => db.prepare("UPDATE audit_log SET result = 'x' WHERE seq = 1").run()).toThrow(
    /append-only/,
  );
  expect(() => db.prepare('DELETE FROM audit_log WHERE seq = 1').run()).toThrow(/append-only/);
});

const POSITIONS = [1, 2, 37, 50, 51, 99, 119];

describe.each(POSITIONS)('tampering with entry %i', (seq) => {
  test('a changed field fails at that entry', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    ls[i] = JSON.stringify({ ...entryAt(ls, i), result: 'denied:role_not_allowed' });
    expect(verifyAuditLines(ls)).toMatchObject({ ok: false, line: i + 1, seq, reason: 'hash' });
  });

  test('a changed and re-hashed entry fails where the chain next refers to it', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    ls[i] = JSON.stringify(rehash({ ...entryAt(ls, i), actor: 'mallory' }));
    const r = verifyAuditLines(ls);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    // The next line is either the following entry (whose prev_hash no longer matches) or the
    // checkpoint that signed the original.
    expect(r.line).toBe(i + 2);
    expect(['chain', 'checkpoint']).toContain(r.reason);
  });

  test('a dropped entry fails at the line where it was', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    ls.splice(i, 1);
    const r = verifyAuditLines(ls);
    expect(r).toMatchObject({ ok: false, line: i + 1 });
    if (!r.ok) expect(['sequence', 'checkpoint']).toContain(r.reason);
  });

  test('two entries swapped fail at the first of them', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    const j = lineOf(ls, seq + 1);
    [ls[i], ls[j]] = [ls[j]!, ls[i]!];
    const r = verifyAuditLines(ls);
    expect(r).toMatchObject({ ok: false, line: i + 1 });
  });

  test('an inserted copy of another entry fails at the insertion', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    ls.splice(i, 0, ls[lineOf(ls, 10)]!);
    expect(verifyAuditLines(ls)).toMatchObject({ ok: false, line: i + 1, reason: 'sequence' });
  });

  test('an inserted, perfectly chained forgery fails at the entry it displaced', () => {
    const ls = [...lines];
    const i = lineOf(ls, seq);
    const original = entryAt(ls, i);
    const forged = rehash({ ...original, actor: 'mallory', action: 'project_key.release' });
    ls.splice(i, 0, JSON.stringify(forged));
    expect(verifyAuditLines(ls)).toMatchObject({ ok: false, line: i + 2, seq, reason: 'sequence' });
  });
});

test('a fully rewritten chain passes the hashes but not a pinned signing key', () => {
  const attacker = AuditSigner.generate();
  const ls = [...lines];
  let prev: string | undefined;
  const rewritten = ls.map((l, idx) => {
    if (idx === 0)
      return JSON.stringify({ format: 'tre-audit/v1', signer: attacker.publicKeyPem() });
    const o = JSON.parse(l) as AuditEntry & { checkpoint?: { seq: number } };
    if (o.checkpoint) {
      return JSON.stringify({
        checkpoint: attacker.sign(o.checkpoint.seq, prev!, new Date().toISOString()),
      });
    }
    let e: AuditEntry = { ...o, prev_hash: prev ?? o.prev_hash };
    if (e.seq === 30) e = { ...e, result: 'ok-but-forged' };
    e = rehash(e);
    prev = e.hash;
    return JSON.stringify(e);
  });
  expect(verifyAuditLines(rewritten).ok).toBe(true);
  const pinned = verifyAuditLines(rewritten, { publicKeyPem: signer.publicKeyPem() });
  expect(pinned).toMatchObject({ ok: false, seq: 50, reason: 'signature' });
});

test('malformed lines are named', () => {
  expect(verifyAuditLines([lines[0]!, 'not json'])).toMatchObject({
    ok: false,
    line: 2,
    reason: 'malformed',
  });
  expect(verifyAuditLines(['{"seq":1}'])).toMatchObject({
    ok: false,
    line: 1,
    reason: 'malformed',
  });
  expect(verifyAuditLines([])).toMatchObject({ ok: false, reason: 'malformed' });
});

test('a signing key readable by others is refused', () => {
  const p = join(dir, 'loose-key.pem');
  writeFileSync(p, 'x', { mode: 0o644 });
  expect(() => AuditSigner.loadOrCreate(p)).toThrow(/0600/);
});

describe('tre-kms audit verify (offline CLI)', () => {
  test('accepts the export and pins the public key', async () => {
    const f = join(dir, 'good.jsonl');
    writeFileSync(f, lines.join('\n') + '\n');
    const { stdout } = await run(process.execPath, [
      CLI,
      'audit',
      'verify',
      f,
      '--public-key',
      join(dir, 'audit-key.pem.pub'),
    ]);
    expect(stdout).toMatch(/audit log OK: 120 entries, 3 signed checkpoints/);
  });

  test('names the first broken entry and exits 1', async () => {
    const ls = [...lines];
    const i = lineOf(ls, 64);
    ls[i] = JSON.stringify({ ...entryAt(ls, i), object: 'project:other' });
    const f = join(dir, 'bad.jsonl');
    writeFileSync(f, ls.join('\n') + '\n');
    const err = await run(process.execPath, [CLI, 'audit', 'verify', f]).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain(`BROKEN at line ${i + 1} (entry 64)`);
  });

  test('exits 2 on a missing file, 0 on --help', async () => {
    const err = await run(process.execPath, [CLI, 'audit', 'verify', join(dir, 'nope')]).catch(
      (e: { code: number }) => e,
    );
    expect((err as { code: number }).code).toBe(2);
    const { stdout } = await run(process.execPath, [CLI, 'audit', 'verify', '--help']);
    expect(stdout).toMatch(/names the first broken entry/);
  });
});
