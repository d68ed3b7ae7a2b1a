/**
 * `npm run bench`: upload throughput of `tre upload` to an ingress on loopback with storage on
 * tmpfs, beside (a) writing the same files through a gocryptfs mount on tmpfs and (b) an
 * unencrypted tus upload of the same files with the same client library, parallelism and
 * chunk size (its client a process of its own, as `tre upload` is). Two workloads: one 1 GiB file, and 1,000 files of 1 MiB. Medians of RUNS runs,
 * as wall-clock throughput and per CPU second of all processes involved (on a shared machine
 * the second says more about the code, the first about what a user sees).
 *
 * Environment: BENCH_RUNS (default 3), BENCH_SCALE (default 1; 0.25 = quarter-size
 * workloads), BENCH_TMP (default /dev/shm), BENCH_SMOKE=1 (one run at 1/64 size, whatever
 * BENCH_RUNS and BENCH_SCALE say: it shows the bench works, its numbers mean nothing).
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const SMOKE = process.env.BENCH_SMOKE === '1';
const RUNS = SMOKE ? 1 : Number(process.env.BENCH_RUNS ?? 3);
const SCALE = SMOKE ? 1 / 64 : Number(process.env.BENCH_SCALE ?? 1);
const TMP = process.env.BENCH_TMP ?? '/dev/shm';
const MIB = 1024 * 1024;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
const PLAIN_SERVER = join(dirname(fileURLToPath(import.meta.url)), 'plain-tus-server.js');
const PLAIN_CLIENT = join(dirname(fileURLToPath(import.meta.url)), 'plain-tus-client.js');
const JOBS = 4;
const CHUNK = 32 * MIB;

/** CPU seconds (user + system, all threads) a live process has used so far. */
function cpuOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs a command under /usr/bin/time; resolves with its CPU seconds. */
function timed(cmd: string[], stdio: 'inherit' | 'ignore', input?: string): Promise<number> {
  const out = join(mkdtempSync(join(TMP, 'tre-bench-time-')), 't');
  return new Promise((resolve, reject) => {
    const c = spawn('/usr/bin/time', ['-f', '%U %S', '-o', out, ...cmd], {
      stdio: ['ignore', 'ignore', stdio, 'pipe'],
    });
    (c.stdio[3] as NodeJS.WritableStream).end(input ?? '');
    c.once('exit', (code) => {
      const text = code === 0 ? readFileSync(out, 'utf8') : '';
      rmSync(dirname(out), { recursive: true, force: true });
      if (code !== 0) return reject(new Error(`${cmd.join(' ')} exited ${code}`));
      const [u, sy] = text.trim().split('\n').pop()!.split(' ').map(Number);
      resolve(u! + sy!);
    });
  });
}

interface Timing {
  secs: number;
  /** CPU seconds of every process involved (client, server, FUSE daemon). */
  cpu: number;
  /** The client's (cp's) and the server's (FUSE daemon's) share of `cpu`. */
  clientCpu: number;
  serverCpu: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function spawnServer(
  args: string[],
): Promise<{ port: number; pid: number; stop: () => Promise<void> }> {
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) {
        resolve({
          port: Number(m[1]),
          pid: p.pid!,
          stop: () =>
            new Promise<void>((r) => {
              p.once('exit', () => r());
              p.kill('SIGTERM');
            }),
        });
      }
    });
    p.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

async function timeTre(src: string, work: string, mkHex: string): Promise<Timing> {
  const root = join(work, 'ingress');
  const h = (t: string) => createHash('sha256').update(t).digest('hex');
  await mkdir(root, { recursive: true });
  await writeFile(
    join(work, 'users.json'),
    JSON.stringify({
      users: [
        {
          tokenSha256: h('bench-token'),
          username: 'bench',
          roles: { bench: 'data_owner', warm: 'data_owner' },
        },
      ],
    }),
  );
  await writeFile(join(work, 'token'), 'bench-token\n');
  const srv = await spawnServer([
    CLI,
    'ingress',
    'serve',
    '--root',
    root,
    '--port',
    '0',
    '--users',
    join(work, 'users.json'),
  ]);
  try {
    // A running service has compiled the request validators of the calls an upload makes; a
    // fresh one compiles each at its first call. The same calls once, in another project.
    const call = async (method: string, path: string, body?: unknown): Promise<void> => {
      const r = await fetch(`http://127.0.0.1:${srv.port}${path}`, {
        method,
        headers: { Authorization: 'token bench-token', 'Content-Type': 'application/json' },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      await r.arrayBuffer();
      if (!r.ok) throw new Error(`warm-up ${method} ${path}: HTTP ${r.status}`);
    };
    await call('GET', '/v1/projects/warm/ingress-requests');
    await call('POST', '/v1/projects/warm/ingress-requests');
    await call('POST', '/v1/projects/warm/dirs', { path: [] });
    const cpu0 = cpuOf(srv.pid);
    const t0 = process.hrtime.bigint();
    const clientCpu = await timed(
      [
        process.execPath,
        CLI,
        'upload',
        src,
        '--project',
        'bench',
        '--ingress',
        `http://127.0.0.1:${srv.port}`,
        '--token-file',
        join(work, 'token'),
        '--master-key-fd',
        '3',
        '--state-dir',
        join(work, 'state'),
        '--jobs',
        String(JOBS),
        '--chunk-mib',
        String(CHUNK / MIB),
      ],
      'inherit',
      mkHex,
    );
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const serverCpu = cpuOf(srv.pid) - cpu0;
    return { secs, cpu: clientCpu + serverCpu, clientCpu, serverCpu };
  } finally {
    await srv.stop();
  }
}

async function timePlainTus(src: string, work: string): Promise<Timing> {
  const srv = await spawnServer([PLAIN_SERVER, join(work, 'plain')]);
  try {
    const cpu0 = cpuOf(srv.pid);
    const t0 = process.hrtime.bigint();
    const clientCpu = await timed(
      [
        process.execPath,
        PLAIN_CLIENT,
        `http://127.0.0.1:${srv.port}/files`,
        src,
        String(JOBS),
        String(CHUNK),
      ],
      'inherit',
    );
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const serverCpu = cpuOf(srv.pid) - cpu0;
    return { secs, cpu: clientCpu + serverCpu, clientCpu, serverCpu };
  } finally {
    await srv.stop();
  }
}

async function timeGocryptfs(src: string, work: string): Promise<Timing> {
  const cipher = join(work, 'gcfs-cipher');
  const mnt = join(work, 'gcfs-mnt');
  await mkdir(cipher, { recursive: true });
  await mkdir(mnt, { recursive: true });
  await writeFile(join(work, 'pass'), 'bench passphrase\n');
  execFileSync('gocryptfs', [
    '-q',
    '-init',
    '-scryptn',
    '10',
    '-passfile',
    join(work, 'pass'),
    cipher,
  ]);
  // In the foreground, so its CPU time can be read; mounted once the mount point changes device.
  const daemon = spawn(
    'gocryptfs',
    ['-fg', '-q', '-nosyslog', '-passfile', join(work, 'pass'), cipher, mnt],
    { stdio: 'ignore' },
  );
  const dev0 = (await stat(work)).dev;
  for (let i = 0; i < 200 && (await stat(mnt)).dev === dev0; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    const cpu0 = cpuOf(daemon.pid!);
    const t0 = process.hrtime.bigint();
    const cpCpu = await timed(['cp', '-r', src, mnt], 'inherit');
    execFileSync('sync', ['-f', mnt]);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const serverCpu = cpuOf(daemon.pid!) - cpu0;
    return { secs, cpu: cpCpu + serverCpu, clientCpu: cpCpu, serverCpu };
  } finally {
    execFileSync('fusermount3', ['-u', mnt]);
    await new Promise<void>((r) =>
      daemon.exitCode !== null ? r() : daemon.once('exit', () => r()),
    );
  }
}

async function main(): Promise<void> {
  const base = mkdtempSync(join(TMP, 'tre-bench-'));
  const mkHex = randomBytes(32).toString('hex');
  const workloads = [
    {
      name: `1 file of ${Math.round(1024 * SCALE)} MiB`,
      files: 1,
      size: Math.round(1024 * SCALE) * MIB,
    },
    {
      name: `${Math.round(1000 * SCALE)} files of 1 MiB`,
      files: Math.round(1000 * SCALE),
      size: MIB,
    },
  ];
  const rows: string[] = [];
  const cpuRows: string[] = [];
  const sideRows: string[] = [];
  try {
    for (const w of workloads) {
      const src = join(base, 'src', w.name.replace(/\W+/g, '-'));
      await mkdir(src, { recursive: true });
      for (let i = 0; i < w.files; i++) {
        const buf = randomBytes(Math.min(w.size, 64 * MIB));
        const parts = Math.ceil(w.size / buf.length);
        await writeFile(join(src, `f${i}.bin`), Buffer.alloc(0));
        for (let p = 0; p < parts; p++) await writeFile(join(src, `f${i}.bin`), buf, { flag: 'a' });
      }
      const bytes = w.files * w.size;
      const t = { tre: [] as number[], gocryptfs: [] as number[], tus: [] as number[] };
      const c = { tre: [] as number[], gocryptfs: [] as number[], tus: [] as number[] };
      // CPU milliseconds per MiB of plaintext, client side and server side.
      const cc = { tre: [] as number[], gocryptfs: [] as number[], tus: [] as number[] };
      const sc = { tre: [] as number[], gocryptfs: [] as number[], tus: [] as number[] };
      for (let r = 0; r < RUNS; r++) {
        for (const mode of ['tre', 'gocryptfs', 'tus'] as const) {
          const work = join(base, `w-${mode}-${r}`);
          await mkdir(work, { recursive: true });
          const got =
            mode === 'tre'
              ? await timeTre(src, work, mkHex)
              : mode === 'gocryptfs'
                ? await timeGocryptfs(src, work)
                : await timePlainTus(src, work);
          t[mode].push(bytes / MIB / got.secs);
          c[mode].push(bytes / MIB / got.cpu);
          cc[mode].push((1000 * got.clientCpu) / (bytes / MIB));
          sc[mode].push((1000 * got.serverCpu) / (bytes / MIB));
          await rm(work, { recursive: true, force: true });
          process.stderr.write(
            `${w.name} run ${r + 1} ${mode}: ${(bytes / MIB / got.secs).toFixed(0)} MiB/s, ` +
              `${(bytes / MIB / got.cpu).toFixed(0)} MiB per CPU second\n`,
          );
        }
      }
      const m = { tre: median(t.tre), gocryptfs: median(t.gocryptfs), tus: median(t.tus) };
      const mc = { tre: median(c.tre), gocryptfs: median(c.gocryptfs), tus: median(c.tus) };
      rows.push(
        `| ${w.name} | ${m.tre.toFixed(0)} | ${m.gocryptfs.toFixed(0)} | ${m.tus.toFixed(0)} | ${(m.tre / m.gocryptfs).toFixed(2)}x | ${((100 * m.tre) / m.tus).toFixed(0)}% |`,
      );
      cpuRows.push(
        `| ${w.name} | ${mc.tre.toFixed(0)} | ${mc.gocryptfs.toFixed(0)} | ${mc.tus.toFixed(0)} | ${(mc.tre / mc.gocryptfs).toFixed(2)}x | ${((100 * mc.tre) / mc.tus).toFixed(0)}% |`,
      );
      const ms = (x: number[]): string => median(x).toFixed(1);
      sideRows.push(
        `| ${w.name} | ${ms(cc.tre)} / ${ms(sc.tre)} | ${ms(cc.gocryptfs)} / ${ms(sc.gocryptfs)} | ${ms(cc.tus)} / ${ms(sc.tus)} |`,
      );
      await rm(src, { recursive: true, force: true });
    }
  } finally {
    await rm(base, { recursive: true, force: true });
  }
  process.stdout.write(
    [
      `tre upload vs gocryptfs and plain tus, storage on ${TMP}, ${RUNS} runs, medians (MiB/s of plaintext)${SMOKE ? ' (BENCH_SMOKE: a smoke run, not a measurement)' : ''}`,
      '| workload | tre upload | gocryptfs write | plain tus | tre / gocryptfs (floor 1.5x) | tre / plain tus (floor 70%) |',
      '|---|---|---|---|---|---|',
      ...rows,
      '',
      'the same runs per CPU second (MiB of plaintext per CPU second of every process involved: client, server, FUSE daemon, cp)',
      '| workload | tre upload | gocryptfs write | plain tus | tre / gocryptfs | tre / plain tus |',
      '|---|---|---|---|---|---|',
      ...cpuRows,
      '',
      'CPU milliseconds per MiB of plaintext, client / server (tre: the CLI / the ingress; gocryptfs: cp / the FUSE daemon; plain tus: its client / @tus/server with @tus/file-store)',
      '| workload | tre upload | gocryptfs write | plain tus |',
      '|---|---|---|---|',
      ...sideRows,
      '',
    ].join('\n'),
  );
}

await main();
