/**
 * Content encryption benchmark, all figures from the same machine in the same run:
 *   - ours: encrypt of one stream fed from memory (like openssl speed, no I/O) and from a
 *     tmpfs file, on the native and the pure-JS engine; decrypt of one stream; encrypt and
 *     decrypt of one file on the worker pool (one thread, and all cores), tmpfs to tmpfs;
 *   - `gocryptfs -speed` (its in-memory AES-GCM figures);
 *   - writing and reading the same data through a gocryptfs mount whose cipher directory is
 *     on a tmpfs this benchmark mounts (and unmounts);
 *   - `openssl speed -evp aes-256-gcm` at 4 KiB blocks.
 * Each measurement runs --runs times, interleaved, and the median is reported.
 *
 * Usage (root, for the tmpfs and FUSE mounts):
 *   npm run bench [-- --size-mib 1024 --runs 3 --strict]      (env: BENCH_SIZE_MIB, BENCH_RUNS)
 * --strict exits 1 when a floor is missed. BENCH_SMOKE=1 makes any of these one tiny run (8 MiB,
 * openssl for 1 s, no `gocryptfs -speed`): it shows the bench works, its numbers mean nothing.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, createSecretKey, randomBytes, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, rmdir } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { createDecryptStream, createEncryptStream } from '../content-stream.js';
import { defaultContentEngine, nativeContentStatus } from '../native.js';
import { ContentWorkerPool } from '../worker-pool.js';
import { GocryptfsMount } from './gocryptfs.js';

const MIB = 1024 * 1024;
const IO_CHUNK = MIB;

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: process.env.BENCH_SIZE_MIB ?? '1024' },
    runs: { type: 'string', default: process.env.BENCH_RUNS ?? '3' },
    strict: { type: 'boolean', default: false },
  },
});
const SMOKE = process.env.BENCH_SMOKE === '1';
if (![args['size-mib'], args.runs].every((v) => Number.isInteger(Number(v)) && Number(v) >= 1)) {
  console.error('bench: --size-mib and --runs must be positive integers');
  process.exit(2);
}
const sizeMib = SMOKE ? Math.min(8, Number(args['size-mib'])) : Number(args['size-mib']);
const runs = SMOKE ? 1 : Number(args.runs);
const SIZE = sizeMib * MIB;
const CORES = availableParallelism();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/**
 * Plaintext MB/s (10^6 bytes, as openssl and gocryptfs count) of `fn` over SIZE bytes, per
 * wall-clock second and per CPU second of this process (user + system, all its threads). On a
 * busy machine the wall figure drops with every stolen time slice; the CPU figure is what
 * `openssl speed` reports by default (it divides by CPU user time).
 */
async function measure(fn: () => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall: SIZE / 1e6 / seconds, cpu: SIZE / ((c.user + c.system) / 1e6) / 1e6 };
}

async function mbps(fn: () => Promise<void>): Promise<number> {
  return (await measure(fn)).wall;
}

function discard(): Writable {
  return new Writable({
    highWaterMark: 4 * IO_CHUNK,
    write(_chunk, _enc, cb) {
      cb();
    },
  });
}

/** `openssl speed` at 4 KiB; per CPU user second by default, per wall second with -elapsed. */
function opensslGcm4k(elapsed: boolean): number {
  const out = execFileSync(
    'openssl',
    [
      'speed',
      ...(elapsed ? ['-elapsed'] : []),
      '-evp',
      'aes-256-gcm',
      '-bytes',
      '4096',
      '-seconds',
      SMOKE ? '1' : '3',
    ],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const m = /^AES-256-GCM\s+([\d.]+)k\s*$/im.exec(out);
  if (m === null) throw new Error(`cannot parse openssl speed output:\n${out}`);
  return Number(m[1]) / 1000;
}

function gocryptfsSpeed(): Map<string, { mbps: number; selected: boolean }> {
  const r = spawnSync('gocryptfs', ['-speed'], { encoding: 'utf8' });
  const res = new Map<string, { mbps: number; selected: boolean }>();
  for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) {
    const m = /^(\S+)\s+([\d.]+) MB\/s(.*)$/.exec(line.trim());
    if (m !== null)
      res.set(m[1] as string, {
        mbps: Number(m[2]),
        selected: (m[3] as string).includes('selected'),
      });
  }
  if (!res.has('AES-GCM-256-Go'))
    throw new Error(`cannot parse gocryptfs -speed output:\n${r.stdout}${r.stderr}`);
  return res;
}

/**
 * The ceiling Node's crypto API puts on any gocryptfs implementation: one createCipheriv,
 * setAAD, update, final and getAuthTag per 4 KiB block (gocryptfs needs a fresh nonce per
 * block, and a Node cipher object cannot be re-initialised with a new IV).
 */
function nodePerBlockGcm(): { wall: number; cpu: number } {
  const key = createSecretKey(randomBytes(32));
  const block = randomBytes(4096);
  const aad = Buffer.alloc(24);
  const nonces = randomBytes(16 * 1024);
  const n = SMOKE ? 5_000 : 50_000;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const c = createCipheriv(
      'aes-256-gcm',
      key,
      nonces.subarray((i % 1024) * 16, (i % 1024) * 16 + 16),
    );
    c.setAAD(aad);
    c.update(block);
    c.final();
    c.getAuthTag();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  return { wall: (n * 4096) / 1e6 / seconds, cpu: (n * 4096) / ((c.user + c.system) / 1e6) / 1e6 };
}

/** SIZE bytes as 1 MiB chunks cycling through `source`. */
function* memoryChunks(source: Buffer): Generator<Buffer> {
  for (let done = 0; done < SIZE; done += IO_CHUNK) {
    const at = done % source.length;
    yield source.subarray(at, at + Math.min(IO_CHUNK, SIZE - done));
  }
}

async function writeRandomFile(path: string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    const chunk = Buffer.allocUnsafe(IO_CHUNK);
    for (let done = 0; done < SIZE; done += IO_CHUNK) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, Math.min(IO_CHUNK, SIZE - done));
    }
  } finally {
    await fh.close();
  }
}

async function copyFile(src: string, dst: string): Promise<void> {
  await pipeline(createReadStream(src, { highWaterMark: IO_CHUNK }), createWriteStream(dst));
  const fh = await open(dst, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

type Row = { name: string; samples: number[] };

async function main(): Promise<void> {
  if (process.getuid?.() !== 0)
    throw new Error('the benchmark mounts a tmpfs and a gocryptfs: run it as root');
  const rows = new Map<string, Row>();
  const record = (name: string, v: number): void => {
    const row = rows.get(name) ?? { name, samples: [] };
    row.samples.push(v);
    rows.set(name, row);
  };
  const load0 = loadavg();
  console.log(
    `crypto benchmark: ${sizeMib} MiB, ${runs} run(s), median reported${SMOKE ? ' (BENCH_SMOKE: a smoke run, not a measurement)' : ''}`,
  );
  console.log(
    `machine: ${cpus()[0]?.model ?? 'unknown cpu'}, ${CORES} cores; node ${process.version}`,
  );
  console.log(
    `${execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim()}; ${spawnSync('gocryptfs', ['-version'], { encoding: 'utf8' }).stdout.split(';')[0]}`,
  );
  const status = nativeContentStatus();
  console.log(
    `content engine: ${defaultContentEngine()}${status.available ? '' : ` (${status.reason})`}`,
  );
  console.log(`load average at start: ${load0.map((x) => x.toFixed(2)).join(' ')}`);

  const work = await mkdtemp(join(tmpdir(), 'tre-bench-'));
  const fs = join(work, 'tmpfs');
  const mnt = join(work, 'mnt');
  await mkdir(fs);
  await mkdir(mnt);
  const tmpfsMb = 4 * sizeMib + 256;
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${tmpfsMb}m,mode=0700`, 'tre-bench', fs]);
  const pools: ContentWorkerPool[] = [];
  let gmount: GocryptfsMount | undefined;
  const cleanup = async (): Promise<void> => {
    await gmount?.stop();
    for (const p of pools) await p.destroy();
    spawnSync('umount', [fs], { stdio: 'ignore' });
    await rmdir(mnt).catch(() => undefined);
    await rmdir(fs).catch(() => undefined);
    await rmdir(work).catch(() => undefined);
  };
  const onSignal = (): void => {
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const key = randomBytes(32);
    const source = randomBytes(Math.min(SIZE, 64 * MIB));
    const plain = join(fs, 'plain');
    const cipher = join(fs, 'cipher');
    const out = join(fs, 'out');
    const gdir = join(fs, 'gocryptfs-cipher');
    await mkdir(gdir);
    await writeRandomFile(plain);
    const one = new ContentWorkerPool({ threads: 1 });
    const all = new ContentWorkerPool({ threads: CORES });
    pools.push(one, all);
    await all.encryptFile(key, plain, cipher);

    for (let r = 1; r <= runs; r++) {
      process.stdout.write(`run ${r}/${runs} ...`);
      record('openssl speed aes-256-gcm 4 KiB, per CPU second', opensslGcm4k(false));
      record('openssl speed aes-256-gcm 4 KiB, per wall second (-elapsed)', opensslGcm4k(true));
      for (const [name, v] of SMOKE ? [] : gocryptfsSpeed()) {
        if (name.startsWith('AES-GCM'))
          record(`gocryptfs -speed ${name}${v.selected ? ' (selected)' : ''}`, v.mbps);
      }
      const ceiling = nodePerBlockGcm();
      record('node createCipheriv per 4 KiB block (API ceiling), per CPU second', ceiling.cpu);
      record('node createCipheriv per 4 KiB block (API ceiling), per wall second', ceiling.wall);

      // Like openssl speed, no file I/O: the stream is fed from memory.
      const encMem = await measure(() =>
        pipeline(Readable.from(memoryChunks(source)), createEncryptStream(key), discard()),
      );
      record('ours encrypt, stream from memory, 1 thread, per CPU second', encMem.cpu);
      record('ours encrypt, stream from memory, 1 thread, per wall second', encMem.wall);
      const enc = await measure(() =>
        pipeline(
          createReadStream(plain, { highWaterMark: IO_CHUNK }),
          createEncryptStream(key),
          discard(),
        ),
      );
      record('ours encrypt, stream from tmpfs file, 1 thread, per CPU second', enc.cpu);
      record('ours encrypt, stream from tmpfs file, 1 thread, per wall second', enc.wall);
      const saved = process.env.TRE_CRYPTO_NATIVE;
      process.env.TRE_CRYPTO_NATIVE = '0';
      const jsEncrypt = createEncryptStream(key);
      if (saved === undefined) delete process.env.TRE_CRYPTO_NATIVE;
      else process.env.TRE_CRYPTO_NATIVE = saved;
      const encJs = await measure(() =>
        pipeline(createReadStream(plain, { highWaterMark: IO_CHUNK }), jsEncrypt, discard()),
      );
      record('ours encrypt, stream, 1 thread, pure-JS engine, per CPU second', encJs.cpu);
      const dec = await measure(() =>
        pipeline(
          createReadStream(cipher, { highWaterMark: IO_CHUNK }),
          createDecryptStream(key),
          discard(),
        ),
      );
      record('ours decrypt, stream, 1 thread, per CPU second', dec.cpu);
      record('ours decrypt, stream, 1 thread, per wall second', dec.wall);
      const oneEnc = await measure(() => one.encryptFile(key, plain, out));
      record('ours encrypt, file, pool 1 thread', oneEnc.wall);
      record('ours encrypt, file, pool 1 thread, per CPU second', oneEnc.cpu);
      await rm(out);
      const allEnc = await measure(() => all.encryptFile(key, plain, out));
      record(`ours encrypt, file, pool ${CORES} threads (all cores)`, allEnc.wall);
      record(`ours encrypt, file, pool ${CORES} threads, per CPU second (all threads)`, allEnc.cpu);
      await rm(out);
      record(
        'ours decrypt, file, pool 1 thread',
        await mbps(() => one.decryptFile(key, cipher, out)),
      );
      await rm(out);
      record(
        `ours decrypt, file, pool ${CORES} threads (all cores)`,
        await mbps(() => all.decryptFile(key, cipher, out)),
      );
      await rm(out);

      // Write through gocryptfs, then remount so the read is not served from the page cache.
      gmount = await GocryptfsMount.start(gdir, mnt, key);
      const g0 = gmount.cpuSeconds();
      const gw = await measure(() => copyFile(plain, join(mnt, 'f')));
      record('gocryptfs mount on tmpfs: write', gw.wall);
      // The whole cost of writing through gocryptfs: its own CPU plus the writer's syscalls.
      record(
        'gocryptfs mount on tmpfs: write, per CPU second (gocryptfs + writer)',
        SIZE / 1e6 / (gmount.cpuSeconds() - g0 + SIZE / 1e6 / gw.cpu),
      );
      await gmount.stop();
      gmount = await GocryptfsMount.start(gdir, mnt, key);
      record(
        'gocryptfs mount on tmpfs: read',
        await mbps(() =>
          pipeline(createReadStream(join(mnt, 'f'), { highWaterMark: IO_CHUNK }), discard()),
        ),
      );
      await rm(join(mnt, 'f'));
      await gmount.stop();
      gmount = undefined;
      process.stdout.write(' done\n');
    }
  } finally {
    await cleanup();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }

  const med = (name: string): number => {
    const row = rows.get(name);
    if (row === undefined) throw new Error(`no samples for ${name}`);
    return median(row.samples);
  };
  console.log('');
  console.log('| measurement | median MB/s | samples |');
  console.log('|---|---:|---|');
  for (const row of rows.values()) {
    console.log(
      `| ${row.name} | ${median(row.samples).toFixed(0)} | ${row.samples.map((x) => x.toFixed(0)).join(', ')} |`,
    );
  }
  // Like for like: both per CPU second, so time slices lost to other processes count for neither.
  const openssl = med('openssl speed aes-256-gcm 4 KiB, per CPU second');
  const single = med('ours encrypt, stream from memory, 1 thread, per CPU second');
  const singleFile = med('ours encrypt, stream from tmpfs file, 1 thread, per CPU second');
  const opensslWall = med('openssl speed aes-256-gcm 4 KiB, per wall second (-elapsed)');
  const singleWall = med('ours encrypt, stream from memory, 1 thread, per wall second');
  const allFile = med(`ours encrypt, file, pool ${CORES} threads (all cores)`);
  const gWrite = med('gocryptfs mount on tmpfs: write');
  const floors = [
    {
      name: 'single-core encrypt (stream from memory) >= 60% of openssl 4 KiB AES-256-GCM (per CPU second)',
      ratio: single / openssl,
      pass: single >= 0.6 * openssl,
    },
    {
      name: 'all-core file encrypt faster than writing through gocryptfs on tmpfs',
      ratio: allFile / gWrite,
      pass: allFile > gWrite,
    },
  ];
  console.log('');
  console.log(
    `ratio ours single-thread encrypt (stream from memory) / openssl 4 KiB: ${(single / openssl).toFixed(2)} per CPU second, ${(singleWall / opensslWall).toFixed(2)} per wall second`,
  );
  console.log(
    `ratio ours single-thread encrypt from a tmpfs file (read included) / openssl 4 KiB: ${(singleFile / openssl).toFixed(2)} per CPU second`,
  );
  console.log(
    `ratio pure-JS engine single-thread encrypt / openssl 4 KiB: ${(med('ours encrypt, stream, 1 thread, pure-JS engine, per CPU second') / openssl).toFixed(2)} per CPU second`,
  );
  console.log(
    `ratio node per-block API ceiling / openssl 4 KiB: ${(med('node createCipheriv per 4 KiB block (API ceiling), per CPU second') / openssl).toFixed(2)} per CPU second`,
  );
  console.log(
    `ratio ours all-core file encrypt / gocryptfs tmpfs write: ${(allFile / gWrite).toFixed(2)} per wall second, ${(med(`ours encrypt, file, pool ${CORES} threads, per CPU second (all threads)`) / med('gocryptfs mount on tmpfs: write, per CPU second (gocryptfs + writer)')).toFixed(2)} per CPU second`,
  );
  console.log(
    `ratio ours all-core file decrypt / gocryptfs tmpfs read: ${(med(`ours decrypt, file, pool ${CORES} threads (all cores)`) / med('gocryptfs mount on tmpfs: read')).toFixed(2)}`,
  );
  for (const f of floors)
    console.log(`${f.pass ? 'PASS' : 'FAIL'}  ${f.name} (ratio ${f.ratio.toFixed(2)})`);
  console.log(
    `load average at end: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  if (args.strict && floors.some((f) => !f.pass)) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
