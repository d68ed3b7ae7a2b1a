/**
 * `npm run bench`: the KMS on loopback as its own process (`tre-kms serve`), driven by autocannon.
 *   1. all wrapped DEKs of a 100,000-file project, streamed in one response     (target < 2 s)
 *   2. single file-key release, policy + audit append included                  (>= 2,000 req/s, p99 < 20 ms)
 *   3. audit append, one transaction per entry, sustained                      (>= 5,000 entries/s)
 *   4. offline `tre-kms audit verify` of a 1,000,000-entry export               (< 30 s)
 * Medians of several runs. A minimal stand-in answers the hub's GET /user (cached by the KMS).
 * BENCH_SMOKE=1: one tiny run of each part (1,000 files, 1 s of load, 10,000 audit entries) that
 * shows the bench works; its numbers mean nothing and bench-results/ is left alone.
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { AuditLog, AuditSigner, exportLines } from '../audit.js';
import { migrate, openDatabase } from '../db.js';
import { seedConsentedProject } from './seed.js';

// BENCH_KMS_CLI runs another build of tre-kms (e.g. main's) under the same load, for A/B runs.
const CLI = process.env.BENCH_KMS_CLI ?? fileURLToPath(new URL('../cli.js', import.meta.url));
const SMOKE = process.env.BENCH_SMOKE === '1';
const FILES = SMOKE ? 1_000 : Number(process.env.BENCH_FILES ?? 100_000);
const VERIFY_ENTRIES = SMOKE ? 10_000 : Number(process.env.BENCH_VERIFY_ENTRIES ?? 1_000_000);
const RUNS = SMOKE ? 1 : 3;
const LOAD_SECONDS = SMOKE ? 1 : 8;
/**
 * Serving processes of tre-kms (its `workers` setting) for each release measurement, e.g. "1,2":
 * on a 2-core machine shared with autocannon one process can beat two, which contend for
 * SQLite's write lock and re-read pages the other one changed.
 */
const WORKER_COUNTS = (process.env.BENCH_WORKERS ?? '1,2').split(',').map(Number);
const TOKEN = randomBytes(16).toString('hex');

/** User + system CPU seconds a process and its live children have used so far (Linux /proc). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  let s = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ')) {
    if (child.trim()) s += cpuSeconds(Number(child));
  }
  return s;
}
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tre-kms-bench-'));
  const results: Record<string, unknown> = {};
  const hub = createServer((req, res) => {
    if (req.url === '/hub/api/user' && req.headers.authorization === `token ${TOKEN}`) {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ kind: 'user', name: 'bench-pi', admin: false }));
    } else {
      res.statusCode = 403;
      res.end('{}');
    }
  });
  hub.listen(0, '127.0.0.1');
  await once(hub, 'listening');
  const hubPort = (hub.address() as { port: number }).port;
  const port = 30000 + (process.pid % 20000);
  const dbPath = join(dir, 'kms.sqlite');
  const t0 = performance.now();
  const fileId = seedConsentedProject(dbPath, {
    project: 'bench',
    pi: 'bench-pi',
    dataOwner: 'bench-do',
    organisation: 'Bench',
    files: FILES,
    fileSize: 1 << 20,
  });
  console.log(`seeded ${FILES} files in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  // BENCH_SERVER_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the server.
  const serverArgs = (process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter(Boolean);
  const base = `http://127.0.0.1:${port}`;
  const startServer = async (workers: number) => {
    writeFileSync(
      join(dir, 'kms.yaml'),
      `database: kms.sqlite\nauditKey: audit.pem\nagreementVersion: "1"\nlogLevel: warn\nport: ${port}\nworkers: ${workers}\nhub:\n  apiUrl: http://127.0.0.1:${hubPort}/hub/api\n`,
    );
    const child = spawn(
      process.execPath,
      [...serverArgs, CLI, 'serve', '--config', join(dir, 'kms.yaml')],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) break;
      } catch {
        if (i > 1200) throw new Error('tre-kms did not start');
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return child;
  };
  const stopServer = async (child: ReturnType<typeof spawn>) => {
    child.kill('SIGTERM');
    await once(child, 'exit');
  };
  let child = await startServer(WORKER_COUNTS[0]!);
  try {
    const headers = { Authorization: `token ${TOKEN}` };

    // 1. streamed batch of wrapped DEKs
    const batch: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const s = performance.now();
      const res = await fetch(`${base}/v1/projects/bench/files/keys`, { headers });
      const text = await res.text();
      const lines = text.split('\n').length - 1;
      if (res.status !== 200 || lines !== FILES)
        throw new Error(`batch: ${res.status}, ${lines} lines`);
      if (i > 0) batch.push((performance.now() - s) / 1000);
    }
    results.batchSeconds = median(batch);
    console.log(
      `1. ${FILES} wrapped DEKs streamed: median ${median(batch).toFixed(2)} s (runs ${batch.map((x) => x.toFixed(2)).join(', ')})`,
    );

    // 2. single key release under load, for each number of serving processes
    const releases: Record<string, unknown> = {};
    for (const [wi, workers] of WORKER_COUNTS.entries()) {
      if (wi > 0) {
        await stopServer(child);
        child = await startServer(workers);
      }
      const rel: Array<{ rps: number; p99: number; p50: number; cpuMs: number }> = [];
      for (let i = 0; i < RUNS; i++) {
        const cpu0 = cpuSeconds(child.pid!);
        const r = await autocannon({
          url: `${base}/v1/projects/bench/files/${fileId}/key`,
          headers,
          connections: 16,
          duration: LOAD_SECONDS,
        });
        if (r.non2xx > 0 || r.errors > 0)
          throw new Error(`release: ${r.non2xx} non-2xx, ${r.errors} errors`);
        const cpuMs = ((cpuSeconds(child.pid!) - cpu0) * 1000) / r.requests.total;
        rel.push({ rps: r.requests.average, p99: r.latency.p99, p50: r.latency.p50, cpuMs });
      }
      releases[String(workers)] = {
        rps: median(rel.map((r) => r.rps)),
        p99: median(rel.map((r) => r.p99)),
        p50: median(rel.map((r) => r.p50)),
        serverCpuMsPerRequest: median(rel.map((r) => r.cpuMs)),
      };
      const cpuMs = median(rel.map((r) => r.cpuMs));
      console.log(
        `2. key release (${workers} worker${workers > 1 ? 's' : ''}): median ${median(rel.map((r) => r.rps)).toFixed(0)} req/s, p50 ${median(rel.map((r) => r.p50))} ms, p99 ${median(rel.map((r) => r.p99))} ms; server CPU ${cpuMs.toFixed(3)} ms per request (${(1000 / cpuMs).toFixed(0)} requests per CPU second); runs ${rel.map((r) => r.rps.toFixed(0)).join(', ')} req/s`,
      );
    }
    results.release = releases;
  } finally {
    await stopServer(child);
    hub.close();
  }

  // 3. audit append, one transaction per entry as in the service
  const adb = openDatabase(join(dir, 'append.sqlite'));
  migrate(adb);
  const log = new AuditLog(adb, AuditSigner.generate());
  const rates: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const end = performance.now() + (SMOKE ? 500 : 3000);
    let n = 0;
    const s = performance.now();
    const one = adb.transaction((i: number) =>
      log.append({
        actor: 'bench',
        action: 'file_key.release',
        object: `project:bench file:${i}`,
        result: 'ok',
      }),
    );
    while (performance.now() < end) one(n++);
    rates.push(n / ((performance.now() - s) / 1000));
  }
  adb.close();
  results.appendPerSecond = median(rates);
  console.log(
    `3. audit append: median ${median(rates).toFixed(0)} entries/s (one transaction each)`,
  );

  // 4. offline verification of a 1,000,000-entry export
  const vdb = openDatabase(join(dir, 'verify.sqlite'));
  migrate(vdb);
  const signer = AuditSigner.generate();
  const vlog = new AuditLog(vdb, signer, { checkpointEvery: 10_000 });
  const chunk = vdb.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++)
      vlog.append({
        actor: `user${i % 97}`,
        action: 'file_key.release',
        object: `project:bench file:${i}`,
        result: 'ok',
      });
  });
  for (let i = 0; i < VERIFY_ENTRIES; i += 50_000) chunk(i, Math.min(i + 50_000, VERIFY_ENTRIES));
  vlog.checkpoint();
  const exportFile = join(dir, 'audit.jsonl');
  const out = createWriteStream(exportFile);
  for (const line of exportLines(vdb, signer.publicKeyPem()))
    if (!out.write(line + '\n')) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
  vdb.close();
  writeFileSync(join(dir, 'signer.pub'), signer.publicKeyPem());
  const vt: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const s = performance.now();
    const stdout = execFileSync(process.execPath, [
      CLI,
      'audit',
      'verify',
      exportFile,
      '--public-key',
      join(dir, 'signer.pub'),
    ]).toString();
    vt.push((performance.now() - s) / 1000);
    if (!stdout.includes(`${VERIFY_ENTRIES} entries`)) throw new Error(`verify: ${stdout}`);
  }
  results.verifySeconds = median(vt);
  console.log(
    `4. tre-kms audit verify, ${VERIFY_ENTRIES} entries: median ${median(vt).toFixed(1)} s`,
  );

  if (SMOKE) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  mkdirSync(join(process.cwd(), '..', 'bench-results'), { recursive: true });
  writeFileSync(
    join(process.cwd(), '..', 'bench-results', 'kms-service.json'),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        files: FILES,
        verifyEntries: VERIFY_ENTRIES,
        workers: WORKER_COUNTS,
        ...results,
      },
      null,
      2,
    ),
  );
  rmSync(dir, { recursive: true, force: true });
}

await main();
