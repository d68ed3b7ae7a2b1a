/**
 * Real processes on loopback: the ingress service (`tre ingress serve`) and the `tre` CLI run
 * from the compiled package, exactly as users run them; every child is killed in cleanup.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openVolume, decryptTree } from '@tre/crypto';

export const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

const children = new Set<ChildProcess>();

export function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
}

export const TOKENS = {
  alice: 'tok-alice-0123456789',
  bob: 'tok-bob-0123456789',
  carol: 'tok-carol-0123456789',
};

/** alice: data owner of p*, bob: PI of p*, carol: data owner of other only. */
export async function writeUsers(path: string, projects: string[]): Promise<void> {
  const h = (t: string) => createHash('sha256').update(t).digest('hex');
  const roles = (r: string) => Object.fromEntries(projects.map((p) => [p, r]));
  await writeFile(
    path,
    JSON.stringify({
      users: [
        { tokenSha256: h(TOKENS.alice), username: 'alice', roles: roles('data_owner') },
        { tokenSha256: h(TOKENS.bob), username: 'bob', roles: roles('pi') },
        { tokenSha256: h(TOKENS.carol), username: 'carol', roles: { other: 'data_owner' } },
      ],
    }),
  );
  for (const [name, tok] of Object.entries(TOKENS)) {
    await writeFile(join(dirname(path), `${name}.token`), tok + '\n', { mode: 0o600 });
  }
}

export interface Ingress {
  port: number;
  url: string;
  proc: ChildProcess;
  log: string[];
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

function waitExit(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) resolve();
    else p.once('exit', () => resolve());
  });
}

export function startIngress(
  root: string,
  users: string,
  extra: string[] = [],
  port = 0,
): Promise<Ingress> {
  return startIngressWith(root, ['--users', users, ...extra], port);
}

/** `auth` is `--users FILE` or `--kms URL`. */
export async function startIngressWith(root: string, auth: string[], port = 0): Promise<Ingress> {
  const log: string[] = [];
  const proc = spawn(
    process.execPath,
    [CLI, 'ingress', 'serve', '--root', root, '--port', String(port), ...auth],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.add(proc);
  proc.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  const bound = await new Promise<number>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on [^:]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`ingress exited ${code}: ${log.join('')}`)));
  });
  return {
    port: bound,
    url: `http://127.0.0.1:${bound}`,
    proc,
    log,
    async stop() {
      proc.kill('SIGTERM');
      await waitExit(proc);
    },
    async kill9() {
      proc.kill('SIGKILL');
      await waitExit(proc);
    },
  };
}

export interface TreRun {
  proc: ChildProcess;
  done: Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>;
}

/** Runs `tre` with an optional secret on descriptor 3. */
export function tre(args: string[], fd3?: string, env: NodeJS.ProcessEnv = {}): TreRun {
  const proc = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  children.add(proc);
  const fd = proc.stdio[3] as NodeJS.WritableStream;
  fd.on('error', () => undefined);
  fd.end(fd3 ?? '');
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { proc, done };
}

export function uploadArgs(o: {
  paths: string[];
  project: string;
  ingress: string;
  dir: string;
  state?: string;
  submit?: boolean;
  extra?: string[];
}): string[] {
  return [
    'upload',
    ...o.paths,
    '--project',
    o.project,
    '--ingress',
    o.ingress,
    '--token-file',
    join(o.dir, 'alice.token'),
    '--master-key-fd',
    '3',
    '--state-dir',
    o.state ?? join(o.dir, 'state'),
    ...(o.submit === false
      ? []
      : [
          '--legal-basis',
          'Art. 9(2)(j) GDPR, ethics vote 2024-17',
          '--pseudonymised',
          '--no-direct-identifiers',
          '--minimised',
        ]),
    ...(o.extra ?? []),
  ];
}

export async function api(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const res = await fetch(base + path, {
    method,
    headers: {
      Authorization: `token ${token}`,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // keep text
  }
  return { status: res.status, json };
}

/** Writes a tree of random files; returns their relative paths. */
export async function makeTree(
  root: string,
  files: Record<string, number | Buffer>,
): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    const p = join(root, rel);
    await mkdir(dirname(p), { recursive: true });
    await writeFile(p, typeof content === 'number' ? randomBytes(content) : content);
  }
}

/** Decrypts a project tree written in master-key mode with the crypto library. */
export async function decryptProject(
  cipherDir: string,
  masterKeyHex: string,
  out: string,
): Promise<void> {
  const vol = await openVolume(cipherDir, { masterKey: Buffer.from(masterKeyHex, 'hex') });
  try {
    await decryptTree(vol, out);
  } finally {
    vol.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
