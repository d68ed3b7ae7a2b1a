/** Real processes for the session tests: the bridge, JupyterHub, a local one-node Slurm. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const REPO = resolve(PKG, '..');
export const VENV = join(REPO, '.venv');
export const SLURM_CONF = join(process.env.TRE_SLURM_DIR ?? '/tmp/tre-slurm', 'slurm.conf');
export const TREFS_COMMAND = [process.execPath, join(REPO, 'trefs', 'dist', 'cli.js')];
export const AGENT_COMMAND = `${process.execPath} ${join(REPO, 'container', 'dist', 'job-agent-cli.js')}`;

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 60_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

export function workDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** The Python the venv was made from: the container must see it (read-only) too. */
export function pythonBasePrefix(): string {
  return execFileSync(join(VENV, 'bin', 'python'), ['-c', 'import sys; print(sys.base_prefix)'], {
    encoding: 'utf8',
  }).trim();
}

export function startSlurm(): void {
  execFileSync(join(REPO, 'scripts', 'slurm-local'), ['start'], { stdio: 'inherit' });
}

export function slurm(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', env: { ...process.env, SLURM_CONF } });
}

export class Proc {
  readonly child: ChildProcess;
  constructor(argv: string[], opts: { cwd: string; log: string; env?: NodeJS.ProcessEnv }) {
    const out = createWriteStream(opts.log);
    this.child = spawn(argv[0] as string, argv.slice(1), {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.pipe(out);
    this.child.stderr?.pipe(out);
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([
      new Promise((r) => c.once('exit', () => r(true))),
      new Promise((r) => (timer = setTimeout(() => r(false), 10_000))),
    ]);
    // A pending 10 s timer would keep jest alive after the last test.
    clearTimeout(timer);
    if (!exited) c.kill('SIGKILL');
  }
}

export interface BridgeSetup {
  dir: string;
  token: string;
  apiPort: number;
  gatewayPort: number;
  configPath: string;
}

/** Writes a bridge configuration into a fresh directory. */
export async function bridgeSetup(opts: {
  executor: 'slurm' | 'local';
  /** A facts file for the file policy, or the URL of a running KMS. */
  policy: string | { kmsUrl: string };
  /** The agent's trefs settings (session.trefs). */
  trefs?: Record<string, unknown>;
  extra?: string;
  dir?: string;
}): Promise<BridgeSetup> {
  const dir = opts.dir ?? workDir('tre-bridge-');
  const token = randomBytes(32).toString('base64url');
  writeFileSync(join(dir, 'token'), token, { mode: 0o600 });
  if (typeof opts.policy === 'string') writeFileSync(join(dir, 'policy.yaml'), opts.policy);
  const apiPort = await freePort();
  const gatewayPort = await freePort();
  const configPath = join(dir, 'bridge.yaml');
  writeFileSync(
    configPath,
    [
      `listen: { host: 127.0.0.1, port: ${apiPort} }`,
      `gateway: { host: 127.0.0.1, port: ${gatewayPort} }`,
      'database: bridge.sqlite',
      'apiTokenFile: token',
      `executor: ${opts.executor}`,
      `slurm: { env: { SLURM_CONF: ${JSON.stringify(SLURM_CONF)} } }`,
      'logDir: logs',
      `agentCommand: ${JSON.stringify(AGENT_COMMAND)}`,
      typeof opts.policy === 'string'
        ? 'policy: { file: policy.yaml }'
        : `policy: { kmsUrl: ${JSON.stringify(opts.policy.kmsUrl)} }`,
      'pollIntervalMs: 300',
      'session:',
      `  dataRoot: ${JSON.stringify(join(dir, 'data'))}`,
      `  workRoot: ${JSON.stringify(join(dir, 'jobs'))}`,
      '  listenHost: 127.0.0.1',
      '  advertiseHost: 127.0.0.1',
      `  readOnlyPaths: ${JSON.stringify([VENV, pythonBasePrefix()])}`,
      `  pathPrepend: ${JSON.stringify([join(VENV, 'bin')])}`,
      ...(opts.trefs ? [`  trefs: ${JSON.stringify(opts.trefs)}`] : []),
      opts.extra ?? '',
    ].join('\n'),
  );
  return { dir, token, apiPort, gatewayPort, configPath };
}

export function startBridgeProcess(b: BridgeSetup): Proc {
  return new Proc([process.execPath, join(PKG, 'dist', 'cli.js'), 'serve', '-c', b.configPath], {
    cwd: b.dir,
    log: join(b.dir, 'bridge.log'),
  });
}

export async function bridgeApi(
  b: BridgeSetup,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`http://127.0.0.1:${b.apiPort}/api/v1${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${b.token}`,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export const ALL_TRAININGS = `
      - { kind: hpc, expiresAt: "2099-01-01T00:00:00Z" }
      - { kind: data_awareness, expiresAt: "2099-01-01T00:00:00Z" }
      - { kind: tre_rules, expiresAt: "2099-01-01T00:00:00Z" }`;
