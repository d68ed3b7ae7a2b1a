/** Runs the README's run command in a fresh state folder and stops it like Ctrl-C does. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The command the README shows for running the TRE, exactly as a reader would copy it. */
export function readmeRunCommand(): string {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const line = readme.split('\n').find((l) => /^(sudo )?scripts\/quickstart run\b/.test(l));
  if (!line) throw new Error('README.md shows no "scripts/quickstart run" command');
  return line
    .replace(/^sudo /, '')
    .replace(/\s+#.*$/, '')
    .trim();
}

async function free(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

/** Seven consecutive free loopback ports, away from the demo's default 8700. */
export async function freePortBase(): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 20_000 + Math.floor(Math.random() * 9_000);
    let ok = true;
    for (let i = 0; i < 7 && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
  throw new Error('no free range of seven ports');
}

export interface RunningDemo {
  child: ChildProcess;
  output(): string;
  state: string;
  port: number;
  url: string;
  exited: Promise<number | null>;
}

export async function startDemo(
  opts: {
    state?: string;
    port?: number;
    timeoutMs?: number;
    args?: string[];
    /** scripts/run-local: what the README's command runs once the machine is set up. */
    runLocal?: boolean;
  } = {},
): Promise<RunningDemo> {
  const state = opts.state ?? mkdtempSync(join(tmpdir(), 'tre-demo-e2e-'));
  const port = opts.port ?? (await freePortBase());
  const command = [
    opts.runLocal ? 'scripts/run-local' : readmeRunCommand(),
    ...(opts.args ?? []),
  ].join(' ');
  const child = spawn('bash', ['-c', command], {
    cwd: REPO,
    env: { ...process.env, TRE_DEMO_STATE: state, TRE_DEMO_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, like a shell job: Ctrl-C signals the whole group.
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + (opts.timeoutMs ?? 420_000);
  const url = await new Promise<string>((res, rej) => {
    const tick = setInterval(() => {
      const m = /The TRE is running at (http:\/\/\S+)/.exec(out);
      if (m) {
        clearInterval(tick);
        res(m[1] as string);
      } else if (child.exitCode !== null || Date.now() > deadline) {
        clearInterval(tick);
        rej(new Error(`the demo did not start (exit ${child.exitCode}):\n${out.slice(-4000)}`));
      }
    }, 200);
  });
  return { child, output: () => out, state, port, url, exited };
}

/** Ctrl-C: SIGINT to the foreground process group. */
export async function ctrlC(d: RunningDemo, timeoutMs = 120_000): Promise<number | null> {
  if (d.child.exitCode !== null) return d.child.exitCode;
  process.kill(-(d.child.pid as number), 'SIGINT');
  return Promise.race([
    d.exited,
    new Promise<number | null>((_, rej) =>
      setTimeout(() => rej(new Error('the demo did not stop after Ctrl-C')), timeoutMs),
    ),
  ]);
}

/** Processes whose command line or working folder mentions the state folder. */
export function processesUsing(state: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (cmd.includes(state) || cwd.startsWith(state)) found.push(`${pid} (in ${cwd}): ${cmd}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

export function mountsUnder(state: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[1]?.startsWith(state));
}

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
