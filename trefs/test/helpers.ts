import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm } from 'node:fs/promises';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { generateKeyPair, type KeyPair } from '@tre/crypto';
import { FileKeyService } from '../src/file-key-service.js';
import { MemoryKeyService } from '../src/memory-key-service.js';

export const run = promisify(execFile);
export const CLI = resolve('dist/cli.js');

/** FUSE must be there: these tests exist to exercise it, so its absence is a failure. */
export function requireFuse(): void {
  if (!existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing: trefs tests need FUSE');
}

export interface Project {
  base: string;
  cipher: string;
  mnt: string;
  state: string;
  kek: KeyPair;
  projectKey: KeyPair;
  volumeKey: Buffer;
  keyJson: string;
}

export async function makeProject(): Promise<Project> {
  const base = await mkdtemp(join(process.env.TREFS_TEST_TMP ?? tmpdir(), 'trefs-test-'));
  const cipher = join(base, 'cipher');
  const mnt = join(base, 'mnt');
  await mkdir(cipher);
  await mkdir(mnt);
  const kek = await generateKeyPair('x25519');
  const { service, projectKey, volumeKey } = await MemoryKeyService.createProject('p1', kek);
  const state = join(base, 'kms.json');
  await FileKeyService.save(state, service.project);
  const keyJson = JSON.stringify({
    kem: kek.kem,
    privateKey: Buffer.from(kek.privateKey).toString('base64url'),
  });
  return { base, cipher, mnt, state, kek, projectKey, volumeKey, keyJson };
}

export function isMounted(mnt: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === mnt);
}

export interface Daemon {
  child: ChildProcess;
  stderr: () => string;
}

/** Starts `trefs mount` as its own process with the key on fd 3; resolves once mounted. */
export async function startDaemon(
  p: Project,
  extra: string[] = [],
  keyJson = p.keyJson,
): Promise<Daemon> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'mount',
      p.cipher,
      p.mnt,
      '--project',
      'p1',
      '--kms',
      `file:${p.state}`,
      '--key-fd',
      '3',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
  );
  if (process.env.TREFS_TEST_LOG) child.stderr!.pipe(createWriteStream(process.env.TREFS_TEST_LOG));
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const keyPipe = child.stdio[3] as NodeJS.WritableStream;
  keyPipe.end(keyJson);
  await new Promise<void>((res, rej) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('trefs: mounted')) res();
    });
    child.once('exit', (code) => rej(new Error(`trefs exited with ${code}: ${err}`)));
  });
  return { child, stderr: () => err };
}

export async function stopDaemon(d: Daemon | undefined, mnt: string): Promise<void> {
  if (d && d.child.exitCode === null && d.child.signalCode === null) {
    const exited = new Promise((r) => d.child.once('exit', r));
    d.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
  }
  if (isMounted(mnt)) await run('fusermount', ['-uz', mnt]).catch(() => undefined);
  for (const s of d?.child.stdio ?? []) s?.destroy();
}

export async function cleanup(p: Project | undefined, d?: Daemon): Promise<void> {
  if (!p) return;
  await stopDaemon(d, p.mnt);
  await rm(p.base, { recursive: true, force: true });
}

export async function readState(p: Project): Promise<{
  deks: { fileId: string }[];
  audit: { action: string; pid?: number; exe?: string; fileId?: string }[];
  membership: { active: boolean };
}> {
  const lines = async (path: string) =>
    (await readFile(path, 'utf8').catch(() => ''))
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l));
  const state = JSON.parse(await readFile(p.state, 'utf8'));
  return {
    membership: state.membership,
    deks: await lines(p.state + '.deks.jsonl'),
    audit: await lines(p.state + '.audit.jsonl'),
  };
}

/** Deterministic PRNG (mulberry32) so a failing random test can be replayed by its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
