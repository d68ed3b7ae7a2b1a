/**
 * `npm run bench`: trefs against gocryptfs 2.3 on tmpfs in the same run. Sequential write and
 * read of one large file (dd, 1 MiB requests) and untar of a tree of small files, each timed
 * `--runs` times, alternating between the two (medians reported), plus each daemon's peak
 * resident memory (VmHWM).
 *
 *   node dist/bench/bench.js [--size-mib 1024] [--files 10000] [--runs 3] [--dir /dev/shm]
 *
 * BENCH_SMOKE=1 makes it one run of 16 MiB and 200 files, whatever the options say: it shows the
 * bench works, its numbers mean nothing.
 */
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { defaultContentEngine, generateKeyPair } from '@tre/crypto';
import { FileKeyService } from '../file-key-service.js';
import { MemoryKeyService } from '../memory-key-service.js';

const run = promisify(execFile);

function arg(name: string, def: number | string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : String(def);
}

const SMOKE = process.env.BENCH_SMOKE === '1';
const SIZE_MIB = SMOKE ? 16 : Number(arg('--size-mib', 1024));
const FILES = SMOKE ? 200 : Number(arg('--files', 10000));
const RUNS = SMOKE ? 1 : Number(arg('--runs', 3));
const DIR = arg('--dir', '/dev/shm');

interface Fs {
  name: string;
  mnt: string;
  pid: number;
  stop(): Promise<void>;
}

async function time(cmd: string): Promise<number> {
  const t0 = performance.now();
  await run('/bin/sh', ['-c', cmd], { maxBuffer: 1 << 24 });
  return (performance.now() - t0) / 1000;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function peakKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

async function startGocryptfs(base: string): Promise<Fs> {
  const c = join(base, 'g-cipher');
  const m = join(base, 'g-mnt');
  await mkdir(c);
  await mkdir(m);
  await run('gocryptfs', ['-q', '-init', '-extpass', 'echo bench', '-scryptn', '10', c]);
  await run('gocryptfs', ['-q', '-extpass', 'echo bench', c, m]);
  const { stdout } = await run('pgrep', ['-n', '-f', `gocryptfs.*${c}`]);
  return {
    name: 'gocryptfs 2.3',
    mnt: m,
    pid: Number(stdout.trim()),
    stop: async () => void (await run('fusermount', ['-u', m])),
  };
}

async function startTrefs(base: string): Promise<Fs> {
  const c = join(base, 't-cipher');
  const m = join(base, 't-mnt');
  await mkdir(c);
  await mkdir(m);
  const kek = await generateKeyPair('x25519');
  const { service } = await MemoryKeyService.createProject('bench', kek);
  const state = join(base, 'kms.json');
  await FileKeyService.save(state, service.project);
  const cli = resolve(new URL('../cli.js', import.meta.url).pathname);
  const child = spawn(
    process.execPath,
    [
      cli,
      'mount',
      c,
      m,
      '--project',
      'bench',
      '--kms',
      `file:${state}`,
      '--key-fd',
      '3',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] },
  );
  (child.stdio[3] as NodeJS.WritableStream).end(
    JSON.stringify({ kem: kek.kem, privateKey: Buffer.from(kek.privateKey).toString('base64url') }),
  );
  await new Promise<void>((res, rej) => {
    child.stdout!.on('data', (b: Buffer) => b.toString().includes('mounted') && res());
    child.once('exit', (code) => rej(new Error(`trefs exited with ${code}`)));
  });
  return {
    name: 'trefs',
    mnt: m,
    pid: child.pid!,
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

async function makeTarball(base: string): Promise<string> {
  const src = join(base, 'tree');
  const perDir = 100;
  for (let i = 0; i < FILES; i++) {
    const dir = join(src, `d${Math.floor(i / perDir)}`);
    if (i % perDir === 0) await mkdir(dir, { recursive: true });
    await writeFile(join(dir, `f${i}.dat`), randomBytes(500 + (i % 4000)));
  }
  const tar = join(base, 'tree.tar');
  await run('tar', ['cf', tar, '-C', src, '.']);
  await rm(src, { recursive: true });
  return tar;
}

interface Runs {
  write: number[];
  read: number[];
  untar: number[];
}

/** One run of each test on one filesystem. */
async function benchRun(fs: Fs, tar: string, r: number, runs: Runs): Promise<void> {
  const big = join(fs.mnt, 'big');
  runs.write.push(
    await time(`dd if=/dev/zero of=${big} bs=1M count=${SIZE_MIB} conv=fsync status=none`),
  );
  runs.read.push(await time(`dd if=${big} of=/dev/null bs=1M status=none`));
  await rm(big);
  const dst = join(fs.mnt, `untar${r}`);
  await mkdir(dst);
  runs.untar.push(await time(`tar xf ${tar} -C ${dst}`));
  await rm(dst, { recursive: true });
}

async function summary(fs: Fs, runs: Runs) {
  return {
    writeMBs: (SIZE_MIB * 1.048576) / median(runs.write),
    readMBs: (SIZE_MIB * 1.048576) / median(runs.read),
    untarS: median(runs.untar),
    peakMiB: (await peakKiB(fs.pid)) / 1024,
    runs,
  };
}

async function uptime(): Promise<string> {
  return (await run('uptime')).stdout.trim();
}

async function main() {
  const base = await mkdtemp(join(DIR, 'trefs-bench-'));
  console.log(`load at start: ${await uptime()}`);
  console.log(`content engine: ${defaultContentEngine()}`);
  const mounted: Fs[] = [];
  try {
    const tar = await makeTarball(base);
    mounted.push(await startGocryptfs(base));
    mounted.push(await startTrefs(base));
    // Runs alternate between the two filesystems, so both see the same (shared, noisy) machine.
    const gRuns: Runs = { write: [], read: [], untar: [] };
    const tRuns: Runs = { write: [], read: [], untar: [] };
    for (let r = 0; r < RUNS; r++) {
      await benchRun(mounted[0]!, tar, r, gRuns);
      await benchRun(mounted[1]!, tar, r, tRuns);
    }
    const [g, t] = [await summary(mounted[0]!, gRuns), await summary(mounted[1]!, tRuns)];
    const row = (n: string, x: typeof g) =>
      `| ${n} | ${x.writeMBs.toFixed(0)} | ${x.readMBs.toFixed(0)} | ${x.untarS.toFixed(1)} | ${x.peakMiB.toFixed(0)} |`;
    console.log(
      `size ${SIZE_MIB} MiB, ${FILES} files, ${RUNS} runs (medians), on ${DIR}${SMOKE ? ' (BENCH_SMOKE: a smoke run, not a measurement)' : ''}\n`,
    );
    console.log('| filesystem | seq. write MB/s | seq. read MB/s | untar s | peak RSS MiB |');
    console.log('|---|---|---|---|---|');
    console.log(row(mounted[0]!.name, g));
    console.log(row('trefs', t));
    console.log(
      `\nratios trefs/gocryptfs: write ${(t.writeMBs / g.writeMBs).toFixed(2)} (floor 0.5), ` +
        `read ${(t.readMBs / g.readMBs).toFixed(2)} (floor 0.6), ` +
        `untar ${(g.untarS / t.untarS).toFixed(2)} (floor 0.3)`,
    );
    for (const [n, x] of [
      [mounted[0]!.name, g],
      ['trefs', t],
    ] as const) {
      const secs = (xs: number[]) => xs.map((v) => v.toFixed(2)).join(' ');
      console.log(
        `${n} runs (s): write ${secs(x.runs.write)}; read ${secs(x.runs.read)}; untar ${secs(x.runs.untar)}`,
      );
    }
    console.log(`load at end: ${await uptime()}`);
  } finally {
    for (const m of mounted) await m.stop().catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  }
}

await main();
