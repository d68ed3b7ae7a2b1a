/**
 * The demo's child processes. Each runs in its own process group, so stopping one also stops
 * whatever it started (the hub's proxy and KMS, for instance); stopping goes in reverse order
 * of starting, politely first (SIGTERM, so the hub stops its servers and the KMS signs its audit
 * head), then SIGKILL for anything still there after the grace time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

export interface Child {
  name: string;
  proc: ChildProcess;
  log: string;
}

export class Supervisor {
  private readonly children: Child[] = [];
  private stopping = false;
  /** Called once when a child exits on its own. */
  onUnexpectedExit: (c: Child, code: number | null) => void = () => {};

  start(
    name: string,
    argv: string[],
    opts: { cwd: string; log: string; env?: NodeJS.ProcessEnv },
  ): Child {
    const out = openSync(opts.log, 'a', 0o600);
    const proc = spawn(argv[0] as string, argv.slice(1), {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', out, out],
      detached: true,
    });
    closeSync(out);
    const child = { name, proc, log: opts.log };
    proc.once('exit', (code) => {
      if (!this.stopping) this.onUnexpectedExit(child, code);
    });
    this.children.push(child);
    return child;
  }

  pids(): number[] {
    return this.children.map((c) => c.proc.pid).filter((p): p is number => p !== undefined);
  }

  async stopAll(graceMs = 30_000): Promise<void> {
    this.stopping = true;
    for (const c of [...this.children].reverse()) await stopGroup(c.proc, graceMs);
  }
}

function exited(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is gone already
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM to the leader, then to the group, then SIGKILL; returns when the group is empty. */
export async function stopGroup(p: ChildProcess, graceMs: number): Promise<void> {
  const pid = p.pid;
  if (pid === undefined) return;
  const deadline = Date.now() + graceMs;
  if (!exited(p)) {
    p.kill('SIGTERM');
    await new Promise<void>((res) => {
      const t = setTimeout(res, graceMs);
      p.once('exit', () => {
        clearTimeout(t);
        res();
      });
      if (exited(p)) res();
    });
  }
  signalGroup(pid, 'SIGTERM');
  while (groupAlive(pid) && Date.now() < deadline + 5_000) {
    await new Promise((r) => setTimeout(r, 100));
  }
  if (groupAlive(pid)) signalGroup(pid, 'SIGKILL');
}

/** Stops a process group that is not our child (a local session job), by its leader's pid. */
export async function stopForeignGroup(pid: number, graceMs = 15_000): Promise<void> {
  signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (groupAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (groupAlive(pid)) signalGroup(pid, 'SIGKILL');
}
