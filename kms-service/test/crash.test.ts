/**
 * kill -9 during a write storm: every acknowledged change survives with its audit entry, and the
 * chain still verifies and continues after a restart. The KMS runs as a real child process
 * (`tre-kms serve`); the hub is a minimal stand-in answering GET /user for fixed tokens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get as httpGet, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { exportLines, verifyAuditLines } from '../src/audit.js';
import { openDatabase } from '../src/db.js';
import { seedConsentedProject } from '../src/bench/seed.js';
import { freePort } from './helpers.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
let dir: string;
let hub: Server;
let hubUrl: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tre-kms-crash-'));
  hub = createServer((req, res) => {
    const users: Record<string, string> = {
      'token storm-token': 'stormy',
      'token admin-token': 'boss',
    };
    const name = users[req.headers.authorization ?? ''];
    if (req.url === '/hub/api/user' && name) {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ kind: 'user', name, admin: name === 'boss' }));
    } else {
      res.statusCode = 403;
      res.end('{}');
    }
  });
  await new Promise<void>((r) => hub.listen(0, '127.0.0.1', r));
  hubUrl = `http://127.0.0.1:${(hub.address() as { port: number }).port}/hub/api`;
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await new Promise((r) => hub.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Starts `tre-kms serve` and waits for its health check. Its stderr goes to a file (a pipe
 * nobody reads would block a chatty child once full), quoted should it exit before it serves.
 */
async function startChild(port: number, timeoutMs = 60_000): Promise<ChildProcess> {
  const logPath = join(dir, `kms-${port}-${children.length}.log`);
  const log = openSync(logPath, 'a');
  const child = spawn(process.execPath, [CLI, 'serve', '--config', join(dir, 'kms.yaml')], {
    env: { ...process.env, JUPYTERHUB_API_URL: hubUrl, TRE_KMS_PORT: String(port) },
    stdio: ['ignore', 'ignore', log],
  });
  closeSync(log);
  children.push(child);
  let exited = false;
  child.once('exit', () => (exited = true));
  const until = Date.now() + timeoutMs;
  while (Date.now() < until && !exited) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok) return child;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  const why = exited ? `exited (${child.exitCode ?? child.signalCode})` : 'did not start';
  throw new Error(`tre-kms ${why} on port ${port}:\n${readFileSync(logPath, 'utf8').slice(-4000)}`);
}

const call = (port: number, method: string, path: string, body?: unknown) =>
  fetch(`http://127.0.0.1:${port}${path}`, {
    method,
    headers: { Authorization: 'token storm-token', 'Content-Type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });

test('no acknowledged write is lost and the chain stays valid', async () => {
  const port = await freePort();
  writeFileSync(
    join(dir, 'kms.yaml'),
    'database: kms.sqlite\nauditKey: audit.pem\ncheckpointEvery: 100\nlogLevel: warn\n',
  );
  const child = await startChild(port);
  expect((await call(port, 'PUT', '/v1/me', { organisation: 'Storm Inc' })).status).toBe(200);

  const acked: number[] = [];
  let stop = false;
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      try {
        const r = await call(port, 'POST', '/v1/me/notifications', {
          kind: 'anomaly',
          message: `w${w} #${i}`,
        });
        if (r.status === 201) acked.push(((await r.json()) as { id: number }).id);
      } catch {
        return; // the connection died with the process
      }
    }
  };
  const workers = Array.from({ length: 16 }, (_v, w) => worker(w));
  // Kill in mid-storm: once enough writes were acknowledged (the machine may be busy).
  const until = Date.now() + 20_000;
  while (acked.length < 300 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  stop = true;
  await Promise.all(workers);
  expect(acked.length).toBeGreaterThan(50);

  const db = openDatabase(join(dir, 'kms.sqlite'), { readonly: true });
  const stored = new Set(
    (db.prepare('SELECT id FROM notifications').all() as Array<{ id: number }>).map((r) => r.id),
  );
  const audited = new Set(
    (
      db.prepare("SELECT object FROM audit_log WHERE action = 'notification.file'").all() as Array<{
        object: string;
      }>
    ).map((r) => Number(/^notification:(\d+)/.exec(r.object)![1])),
  );
  expect(acked.filter((id) => !stored.has(id))).toEqual([]);
  expect(acked.filter((id) => !audited.has(id))).toEqual([]);
  // Every stored change has its audit entry (they commit together, or not at all).
  expect([...stored].filter((id) => !audited.has(id))).toEqual([]);
  const pem = (await import('node:fs')).readFileSync(join(dir, 'audit.pem.pub'), 'utf8');
  const r1 = verifyAuditLines(exportLines(db, pem), { publicKeyPem: pem });
  expect(r1.ok).toBe(true);
  db.close();

  // After a restart the chain continues from where the crash left it.
  const again = await startChild(port);
  expect(
    (await call(port, 'POST', '/v1/me/notifications', { kind: 'anomaly', message: 'after' }))
      .status,
  ).toBe(201);
  const exitedAgain = new Promise((r) => again.once('exit', r));
  again.kill('SIGTERM');
  expect(await exitedAgain).toBe(0);
  const db2 = openDatabase(join(dir, 'kms.sqlite'), { readonly: true });
  const r2 = verifyAuditLines(exportLines(db2, pem), { publicKeyPem: pem });
  db2.close();
  expect(r2).toMatchObject({ ok: true });
  if (r1.ok && r2.ok) {
    expect(r2.entries).toBe(r1.entries + 1);
    // The graceful stop signed the head.
    expect(r2.signedSeq).toBe(r2.entries);
  }
}, 180_000);

test('two serving processes: writes interleave on one valid chain, a killed worker is replaced', async () => {
  const port = await freePort();
  writeFileSync(
    join(dir, 'kms.yaml'),
    'database: kms2.sqlite\nauditKey: audit2.pem\ncheckpointEvery: 50\nlogLevel: warn\nworkers: 2\n',
  );
  // Three processes start (the primary migrates first): slow on a loaded machine.
  const primary = await startChild(port, 60_000);
  const workerPids = (): number[] =>
    readFileSync(`/proc/${primary.pid}/task/${primary.pid}/children`, 'utf8')
      .split(' ')
      .filter((x) => x.trim())
      .map(Number);
  const until = Date.now() + 60_000;
  while (workerPids().length < 2 && Date.now() < until)
    await new Promise((r) => setTimeout(r, 100));
  const first = workerPids();
  expect(first).toHaveLength(2);
  expect((await call(port, 'PUT', '/v1/me', { organisation: 'Storm Inc' })).status).toBe(200);

  const acked: number[] = [];
  let stop = false;
  const client = async (w: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      try {
        const r = await call(port, 'POST', '/v1/me/notifications', {
          kind: 'anomaly',
          message: `w${w} #${i}`,
        });
        if (r.status === 201) acked.push(((await r.json()) as { id: number }).id);
        else await r.body?.cancel();
      } catch {
        // a connection of the killed worker; keep going on a new one
      }
    }
  };
  const clients = Array.from({ length: 12 }, (_v, w) => client(w));
  const wait = async (n: number): Promise<void> => {
    const end = Date.now() + 20_000;
    while (acked.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  };
  await wait(150);
  process.kill(first[0]!, 'SIGKILL');
  const before = acked.length;
  await wait(before + 150);
  stop = true;
  await Promise.all(clients);
  expect(acked.length).toBeGreaterThan(before + 50);
  const now = workerPids();
  expect(now).toHaveLength(2);
  expect(now).not.toContain(first[0]);

  const exited = new Promise((r) => primary.once('exit', r));
  primary.kill('SIGTERM');
  expect(await exited).toBe(0);
  const db = openDatabase(join(dir, 'kms2.sqlite'), { readonly: true });
  const stored = new Set(
    (db.prepare('SELECT id FROM notifications').all() as Array<{ id: number }>).map((r) => r.id),
  );
  const audited = db
    .prepare("SELECT object FROM audit_log WHERE action = 'notification.file'")
    .all() as Array<{ object: string }>;
  const auditedIds = new Set(audited.map((r) => Number(/^notification:(\d+)/.exec(r.object)![1])));
  expect(acked.filter((id) => !stored.has(id))).toEqual([]);
  expect(acked.filter((id) => !auditedIds.has(id))).toEqual([]);
  expect(auditedIds.size).toBe(audited.length);
  const pem = readFileSync(join(dir, 'audit2.pem.pub'), 'utf8');
  const r = verifyAuditLines(exportLines(db, pem), { publicKeyPem: pem });
  db.close();
  expect(r).toMatchObject({ ok: true });
}, 180_000);

test('kill -9 during a storm of key releases: every acknowledged release has its audit entry', async () => {
  const port = await freePort();
  // A consented project with one visible file whose key `stormy` (its PI) may fetch.
  const fileId = seedConsentedProject(join(dir, 'kms3.sqlite'), {
    project: 'storm',
    pi: 'stormy',
    dataOwner: 'boss',
    organisation: 'Storm Inc',
    files: 1,
    fileSize: 1,
  });
  writeFileSync(
    join(dir, 'kms.yaml'),
    'database: kms3.sqlite\nauditKey: audit3.pem\ncheckpointEvery: 100\nlogLevel: warn\nagreementVersion: "1"\n',
  );
  const child = await startChild(port);
  let acked = 0;
  let stop = false;
  const client = async (): Promise<void> => {
    while (!stop) {
      try {
        const r = await call(port, 'GET', `/v1/projects/storm/files/${fileId}/key`);
        const body = (await r.json()) as { fileId?: string };
        if (r.status === 200 && body.fileId === fileId) acked++;
      } catch {
        return; // the connection died with the process
      }
    }
  };
  const clients = Array.from({ length: 16 }, () => client());
  const until = Date.now() + 20_000;
  while (acked < 500 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  stop = true;
  await Promise.all(clients);
  expect(acked).toBeGreaterThan(100);

  const db = openDatabase(join(dir, 'kms3.sqlite'), { readonly: true });
  const { n } = db
    .prepare(
      "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'file_key.release' AND result = 'ok'",
    )
    .get() as { n: number };
  // Answers wait for their group commit: entries may outnumber answers (committed, not yet
  // answered when the process died), never the other way round.
  expect(n).toBeGreaterThanOrEqual(acked);
  const pem = readFileSync(join(dir, 'audit3.pem.pub'), 'utf8');
  expect(verifyAuditLines(exportLines(db, pem), { publicKeyPem: pem })).toMatchObject({ ok: true });
  db.close();
}, 180_000);

/** One request on a connection of its own, so node:cluster hands it to the next worker. */
function getFresh(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpGet(
      {
        host: '127.0.0.1',
        port,
        path,
        agent: false,
        headers: { Authorization: 'token storm-token' },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
  });
}

test('with two workers /metrics reports the whole service, whichever worker answers', async () => {
  const port = await freePort();
  writeFileSync(
    join(dir, 'kms.yaml'),
    'database: kms4.sqlite\nauditKey: audit4.pem\nlogLevel: warn\nworkers: 2\n',
  );
  const primary = await startChild(port, 60_000);
  const until = Date.now() + 60_000;
  const workers = (): number =>
    readFileSync(`/proc/${primary.pid}/task/${primary.pid}/children`, 'utf8')
      .split(' ')
      .filter((x) => x.trim()).length;
  while (workers() < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  expect(workers()).toBe(2);
  const N = 40;
  for (let i = 0; i < N; i++) expect((await getFresh(port, '/v1/me')).status).toBe(200);
  const line =
    /^tre_kms_http_request_duration_seconds_count\{[^}]*route="\/v1\/me"[^}]*status="200"[^}]*\} (\d+)$/m;
  for (let i = 0; i < 4; i++) {
    const m = await getFresh(port, '/metrics');
    expect(m.status).toBe(200);
    expect(Number(line.exec(m.body)?.[1])).toBe(N);
  }
  const exited = new Promise((r) => primary.once('exit', r));
  primary.kill('SIGTERM');
  expect(await exited).toBe(0);
}, 180_000);
