/**
 * The local executor: runs the same batch script as a detached child process (`bash -s`, the
 * script on stdin) on this machine. The embedded default when no Slurm is configured. A job is
 * identified by its process id plus the process's start time, so that after a bridge restart a
 * recycled pid is never mistaken for the job.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ExecutorError } from '../errors.js';
import type { Executor, JobInfo, JobRef, SubmitOptions, SubmitResult } from './executor.js';

export interface LocalOptions {
  /** Where each job's output goes (`tre-session-<job>.log`). */
  logDir: string;
  shell?: string;
  /** Grace between SIGTERM and SIGKILL when cancelling. */
  killGraceMs?: number;
}

interface LocalJobData {
  pid: number;
  startTime: string;
}

/** Field 22 of /proc/<pid>/stat: the process's start time in clock ticks since boot. */
function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses; fields after it do not.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = rest[0];
    if (state === 'Z' || state === 'X') return null;
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function parseData(job: JobRef): LocalJobData | null {
  if (!job.data) return null;
  try {
    const d = JSON.parse(job.data) as Partial<LocalJobData>;
    return typeof d.pid === 'number' && typeof d.startTime === 'string'
      ? { pid: d.pid, startTime: d.startTime }
      : null;
  } catch {
    return null;
  }
}

export class LocalExecutor implements Executor {
  readonly name = 'local' as const;

  constructor(private readonly options: LocalOptions) {}

  async submit({ script }: SubmitOptions): Promise<SubmitResult> {
    const jobId = `local-${randomBytes(6).toString('hex')}`;
    let logFd: number;
    try {
      logFd = openSync(join(this.options.logDir, `tre-session-${jobId}.log`), 'a', 0o600);
    } catch (err) {
      throw new ExecutorError(
        `cannot open the job log in ${this.options.logDir}: ${(err as NodeJS.ErrnoException).code}`,
      );
    }
    try {
      const child = spawn(this.options.shell ?? '/bin/bash', ['-s'], {
        detached: true,
        stdio: ['pipe', logFd, logFd],
        env: {
          PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
          HOME: process.env.HOME ?? '/',
          TRE_LOCAL_JOB_ID: jobId,
        },
      });
      const pid = await new Promise<number>((resolve, reject) => {
        child.once('spawn', () => resolve(child.pid as number));
        child.once('error', (e: NodeJS.ErrnoException) =>
          reject(new ExecutorError(`cannot start the job shell: ${e.code ?? e.message}`)),
        );
      });
      child.stdin?.on('error', () => {
        // A script that exits early stops reading; its log says why.
      });
      child.stdin?.end(script);
      child.unref();
      const startTime = processStartTime(pid);
      if (startTime === null) throw new ExecutorError('the job shell exited immediately');
      return { jobId, data: JSON.stringify({ pid, startTime } satisfies LocalJobData) };
    } finally {
      closeSync(logFd);
    }
  }

  private alive(job: JobRef): LocalJobData | null {
    const d = parseData(job);
    if (!d) return null;
    return processStartTime(d.pid) === d.startTime ? d : null;
  }

  async status(jobs: readonly JobRef[]): Promise<Map<string, JobInfo>> {
    const result = new Map<string, JobInfo>();
    for (const job of jobs) {
      result.set(job.jobId, this.alive(job) ? { status: 'running' } : { status: 'gone' });
    }
    return result;
  }

  async cancel(job: JobRef): Promise<void> {
    const d = this.alive(job);
    if (!d) return;
    const signal = (sig: NodeJS.Signals) => {
      try {
        // The job is its own process group (detached): signal the whole session.
        process.kill(-d.pid, sig);
      } catch {
        // Gone already.
      }
    };
    signal('SIGTERM');
    const deadline = Date.now() + (this.options.killGraceMs ?? 10_000);
    while (Date.now() < deadline && this.alive(job)) {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.alive(job)) signal('SIGKILL');
  }

  async cancelByName(): Promise<void> {
    // A local job exists only once spawn succeeded, and then its id is known.
  }
}
