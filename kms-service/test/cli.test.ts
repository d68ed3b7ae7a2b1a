/** tre-kms migrate / backup / audit export / audit verify against a database a live server uses. */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { exportLines, verifyAuditLines } from '../src/audit.js';
import { openDatabase } from '../src/db.js';
import { onboard, startKms, type TestKms } from './helpers.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let t: TestKms;
let config: string;

beforeAll(async () => {
  t = await startKms();
  config = join(t.dir, 'kms.yaml');
  writeFileSync(config, `database: kms.sqlite\nauditKey: audit-key.pem\n`);
  await onboard(t, 'bea');
  await t.as('bea').notify('anomaly', 'odd login');
});

afterAll(async () => {
  await t.stop();
});

test('--version and --help', async () => {
  const pkg = JSON.parse(
    readFileSync(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8'),
  ) as { version: string };
  expect((await run(process.execPath, [CLI, '--version'])).stdout.trim()).toBe(pkg.version);
  const help = (await run(process.execPath, [CLI, '--help'])).stdout;
  for (const c of ['serve', 'migrate', 'backup', 'audit']) expect(help).toContain(c);
  expect((await run(process.execPath, [CLI, 'backup', '--help'])).stdout).toMatch(
    /consistent copy/,
  );
});

test('migrate on an up-to-date database changes nothing', async () => {
  expect((await run(process.execPath, [CLI, 'migrate', '-c', config])).stdout).toMatch(
    /up to date/,
  );
});

test('backup while the server is running is a consistent, verifiable copy', async () => {
  const target = join(t.dir, 'backup.sqlite');
  // Keep writing while the backup runs.
  const writes = Promise.all(
    Array.from({ length: 50 }, (_v, i) => t.as('bea').notify('anomaly', `during ${i}`)),
  );
  await run(process.execPath, [CLI, 'backup', target, '-c', config]);
  await writes;
  const db = openDatabase(target, { readonly: true });
  const people = db.prepare('SELECT username FROM people').all();
  const pem = readFileSync(join(t.dir, 'audit-key.pem.pub'), 'utf8');
  const r = verifyAuditLines(exportLines(db, pem), { publicKeyPem: pem });
  const notes = (db.prepare('SELECT COUNT(*) AS n FROM notifications').get() as { n: number }).n;
  const audited = (
    db.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'notification.file'").get() as {
      n: number;
    }
  ).n;
  db.close();
  expect(people).toEqual([{ username: 'bea' }]);
  expect(r.ok).toBe(true);
  expect(notes).toBe(audited);
  const again = await run(process.execPath, [CLI, 'backup', target, '-c', config]).catch(
    (e: { code: number }) => e,
  );
  expect((again as { code: number }).code).toBe(2);
});

test('audit export from the database, then offline verify', async () => {
  const out = join(t.dir, 'export.jsonl');
  await run(process.execPath, [CLI, 'audit', 'export', '-c', config, '-o', out]);
  const { stdout } = await run(process.execPath, [
    CLI,
    'audit',
    'verify',
    out,
    '--public-key',
    join(t.dir, 'audit-key.pem.pub'),
  ]);
  expect(stdout).toMatch(/audit log OK: \d+ entries/);
});

test('a bad configuration exits 2 with a message', async () => {
  const bad = join(t.dir, 'bad.yaml');
  writeFileSync(bad, 'port: eighty\n');
  const err = (await run(process.execPath, [CLI, 'migrate', '-c', bad]).catch(
    (e: unknown) => e,
  )) as { code: number; stderr: string };
  expect(err.code).toBe(2);
  expect(err.stderr).toMatch(/port must be an integer/);
});
