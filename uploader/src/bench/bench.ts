/**
 * `npm run bench`: upload throughput of `tre upload` to an ingress on loopback with storage on
 * tmpfs, beside (a) writing the same files through a gocryptfs mount on tmpfs and (b) an
 * unencrypted tus upload of the same files with the same client library, parallelism and
 * chunk size. Two workloads: one 1 GiB file, and 1,000 files of 1 MiB. Medians of RUNS runs.
 *
 * Environment: BENCH_RUNS (default 3), BENCH_SCALE (default 1; 0.25 = quarter-size
 * workloads), BENCH_TMP (default /dev/shm).
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync } from 'node:fs';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Upload } from 'tus-js-client';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const TMP = process.env.BENCH_TMP ?? '/dev/shm';
const MIB = 1024 * 1024;
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli.js');
const PLAIN_SERVER = join(dirname(fileURLToPath(import.meta.url)), 'plain-tus-server.js');
const JOBS = 4;
const CHUNK = 8 * MIB;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function spawnServer(args: string[]): Promise<{ port: number; stop: () => Promise<void> }> {
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) {
        resolve({
          port: Number(m[1]),
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

async function files(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...(await files(p)));
    else out.push(p);
  }
  return out;
}

async function timeTre(src: string, work: string, mkHex: string): Promise<number> {
  const root = join(work, 'ingress');
  const h = (t: string) => createHash('sha256').update(t).digest('hex');
  await mkdir(root, { recursive: true });
  await writeFile(
    join(work, 'users.json'),
    JSON.stringify({
      users: [{ tokenSha256: h('bench-token'), username: 'bench', roles: { bench: 'data_owner' } }],
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
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      const c = spawn(
        process.execPath,
        [
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
        { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] },
      );
      (c.stdio[3] as NodeJS.WritableStream).end(mkHex);
      c.once('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`tre upload exited ${code}`)),
      );
    });
    return Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    await srv.stop();
  }
}

async function timePlainTus(src: string, work: string): Promise<number> {
  const srv = await spawnServer([PLAIN_SERVER, join(work, 'plain')]);
  try {
    const queue = await files(src);
    const t0 = process.hrtime.bigint();
    const worker = async (): Promise<void> => {
      for (let f = queue.shift(); f; f = queue.shift()) {
        const size = (await stat(f)).size;
        const path = f;
        await new Promise<void>((resolve, reject) => {
          const up = new Upload(createReadStream(path), {
            endpoint: `http://127.0.0.1:${srv.port}/files`,
            uploadSize: size,
            chunkSize: CHUNK,
            uploadDataDuringCreation: true,
            storeFingerprintForResuming: false,
            metadata: { name: path },
            onSuccess: () => resolve(),
            onError: reject,
          });
          up.start();
        });
      }
    };
    await Promise.all(Array.from({ length: JOBS }, worker));
    return Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    await srv.stop();
  }
}

async function timeGocryptfs(src: string, work: string): Promise<number> {
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
  // The daemon keeps inherited pipes open; without 'ignore' execFileSync would wait for it.
  execFileSync('gocryptfs', ['-q', '-nosyslog', '-passfile', join(work, 'pass'), cipher, mnt], {
    stdio: 'ignore',
  });
  try {
    const t0 = process.hrtime.bigint();
    execFileSync('cp', ['-r', src, mnt]);
    execFileSync('sync', ['-f', mnt]);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    execFileSync('fusermount3', ['-u', mnt]);
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
      for (let r = 0; r < RUNS; r++) {
        for (const mode of ['tre', 'gocryptfs', 'tus'] as const) {
          const work = join(base, `w-${mode}-${r}`);
          await mkdir(work, { recursive: true });
          const secs =
            mode === 'tre'
              ? await timeTre(src, work, mkHex)
              : mode === 'gocryptfs'
                ? await timeGocryptfs(src, work)
                : await timePlainTus(src, work);
          t[mode].push(bytes / MIB / secs);
          await rm(work, { recursive: true, force: true });
          process.stderr.write(
            `${w.name} run ${r + 1} ${mode}: ${(bytes / MIB / secs).toFixed(0)} MiB/s\n`,
          );
        }
      }
      const m = { tre: median(t.tre), gocryptfs: median(t.gocryptfs), tus: median(t.tus) };
      rows.push(
        `| ${w.name} | ${m.tre.toFixed(0)} | ${m.gocryptfs.toFixed(0)} | ${m.tus.toFixed(0)} | ${(m.tre / m.gocryptfs).toFixed(2)}x | ${((100 * m.tre) / m.tus).toFixed(0)}% |`,
      );
      await rm(src, { recursive: true, force: true });
    }
  } finally {
    await rm(base, { recursive: true, force: true });
  }
  process.stdout.write(
    [
      `tre upload vs gocryptfs and plain tus, storage on ${TMP}, ${RUNS} runs, medians (MiB/s of plaintext)`,
      '| workload | tre upload | gocryptfs write | plain tus | tre / gocryptfs (floor 1.5x) | tre / plain tus (floor 70%) |',
      '|---|---|---|---|---|---|',
      ...rows,
      '',
    ].join('\n'),
  );
}

await main();
