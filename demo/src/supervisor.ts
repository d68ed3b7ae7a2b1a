/**
 * The demo's child processes. Each runs in its own process group, so stopping one also stops
 * whatever it started (the hub's proxy, for instance); stopping goes in reverse order of
 * starting, politely first (SIGTERM, so the hub stops its servers and the KMS signs its audit
 * head), then SIGKILL for anything still there after the grace time.
 *
 * A demo that is killed outright (SIGKILL, a crash) cannot stop anything. Two things cover that:
 * each child gets SIGTERM when the demo dies (PR_SET_PDEATHSIG, set by util-linux's `setpriv`
 * just before it execs the child), and every process the demo started is written to a pid
 * file with its command line and start time, so the next start stops whatever is left of the
 * previous run. A recorded process is signalled only while its pid, command line and start time
 * all still match: a pid the kernel has since given to someone else's process is left alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { rmSync, writeFileSync } from 'node:fs';

export interface Child {
  name: string;
  proc: ChildProcess;
  log: string;
  argv: string[];
}

/** One process of a run, as the pid file records it. */
export interface Recorded {
  name: string;
  pid: number;
  /** /proc/<pid>/cmdline with NULs as separators. */
  cmdline: string;
  /** Field 22 of /proc/<pid>/stat: clock ticks since boot at fork; survives exec. */
  startTime: string;
  /** True when the process leads its own process group (stopping it stops the group). */
  group: boolean;
}

export interface PidFileContent {
  demo: Recorded;
  children: Recorded[];
}

const SETPRIV = '/usr/bin/setpriv';

export function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses; the fields after it do not.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X') return null;
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

/** Fields 4 and 5 of /proc/<pid>/stat: the parent and the process group. */
function parentAndGroup(pid: number): { ppid: number; pgrp: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(rest[1]), pgrp: Number(rest[2]) };
  } catch {
    return null;
  }
}

export function cmdlineOf(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '');
  } catch {
    return null;
  }
}

/** A record of a running process as it is now, or null when it is gone. */
export function identify(name: string, pid: number): Recorded | null {
  const startTime = startTimeOf(pid);
  const cmdline = cmdlineOf(pid);
  const ids = parentAndGroup(pid);
  if (startTime === null || cmdline === null || ids === null) return null;
  return { name, pid, cmdline, startTime, group: ids.pgrp === pid };
}

/** True while the recorded process still runs: same pid, command line and start time. */
export function stillRunning(r: Recorded): boolean {
  return startTimeOf(r.pid) === r.startTime && cmdlineOf(r.pid) === r.cmdline;
}

/** The processes whose parent is `pid` (the hub's proxy and its managed KMS, for instance). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (/^\d+$/.test(p) && parentAndGroup(Number(p))?.ppid === pid) out.push(Number(p));
  }
  return out;
}

export class PidFile {
  constructor(readonly path: string) {}

  read(): PidFileContent | null {
    if (!existsSync(this.path)) return null;
    try {
      const v = JSON.parse(readFileSync(this.path, 'utf8')) as PidFileContent;
      if (!v?.demo || !Array.isArray(v.children)) throw new Error('malformed');
      return v;
    } catch (err) {
      throw new Error(
        `${this.path} is unreadable (${(err as Error).message}); remove it once nothing of a previous run is left`,
      );
    }
  }

  /** Written whole, through a rename, so a crash never leaves half a file. */
  write(content: PidFileContent): void {
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, JSON.stringify(content, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path);
  }

  remove(): void {
    rmSync(this.path, { force: true });
  }
}

export class Supervisor {
  private readonly children: Child[] = [];
  private readonly extra: Recorded[] = [];
  private stopping = false;
  /** Called once when a child exits on its own. */
  onUnexpectedExit: (c: Child, code: number | null) => void = () => {};

  constructor(private readonly pidFile?: PidFile) {}

  start(
    name: string,
    argv: string[],
    opts: { cwd: string; log: string; env?: NodeJS.ProcessEnv },
  ): Child {
    const out = openSync(opts.log, 'a', 0o600);
    // setpriv execs the child in place (same pid), with SIGTERM armed for when the demo dies.
    const wrapped = existsSync(SETPRIV) ? [SETPRIV, '--pdeathsig', 'SIGTERM', '--', ...argv] : argv;
    const proc = spawn(wrapped[0] as string, wrapped.slice(1), {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', out, out],
      detached: true,
    });
    closeSync(out);
    const child = { name, proc, log: opts.log, argv };
    proc.once('exit', (code) => {
      if (!this.stopping) this.onUnexpectedExit(child, code);
    });
    this.children.push(child);
    this.record();
    return child;
  }

  /** Records processes a child started on its own (the hub's managed services). */
  adopt(name: string, pid: number): void {
    const r = identify(name, pid);
    if (r) this.extra.push(r);
    this.record();
  }

  /** Writes the pid file: this process, each child as it will look once exec'd, the adopted. */
  private record(): void {
    if (!this.pidFile) return;
    const demo = identify('tre-demo', process.pid);
    if (!demo) return;
    const children: Recorded[] = [];
    for (const c of this.children) {
      const pid = c.proc.pid;
      const startTime = pid === undefined ? null : startTimeOf(pid);
      if (pid === undefined || startTime === null) continue;
      // The command line setpriv leaves behind: the child's own argv.
      children.push({ name: c.name, pid, cmdline: c.argv.join('\0'), startTime, group: true });
    }
    this.pidFile.write({ demo, children: [...children, ...this.extra] });
  }

  pids(): number[] {
    return this.children.map((c) => c.proc.pid).filter((p): p is number => p !== undefined);
  }

  async stopAll(graceMs = 30_000): Promise<void> {
    this.stopping = true;
    for (const c of [...this.children].reverse()) await stopGroup(c.proc, graceMs);
    for (const r of this.extra) await stopRecorded(r, 10_000);
    this.pidFile?.remove();
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

/**
 * Stops a recorded process of an earlier run, if it still is that process: SIGTERM to it (and
 * its group when it led one), SIGKILL after the grace time. Returns whether it was running.
 */
export async function stopRecorded(r: Recorded, graceMs: number): Promise<boolean> {
  if (!stillRunning(r)) return false;
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(r.group ? -r.pid : r.pid, sig);
    } catch {
      // gone meanwhile
    }
  };
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  const alive = () => (r.group ? groupAlive(r.pid) : stillRunning(r));
  while (alive() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
  // Once the leader is gone its pid may be reused, but not while its group has members.
  if (r.group ? groupAlive(r.pid) : stillRunning(r)) signal('SIGKILL');
  return true;
}
