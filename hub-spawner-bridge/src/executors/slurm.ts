import { ExecutorError } from '../errors.js';
import type { Executor, JobInfo, JobRef, SubmitOptions, SubmitResult } from './executor.js';
import { firstLines, runCommand } from './run.js';

export interface SlurmOptions {
  sbatch?: string;
  squeue?: string;
  scancel?: string;
  /**
   * Prepended to every Slurm command, with `{user}` replaced by the session's user, so that jobs
   * run as that user (e.g. ["sudo", "-n", "-u", "{user}"]). Empty when the bridge submits itself.
   */
  commandPrefix?: readonly string[];
  /** Environment for the Slurm commands (e.g. SLURM_CONF); PATH is inherited. */
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** Slurm job states mapped to the three the bridge cares about. */
const PENDING = new Set([
  'PENDING',
  'CONFIGURING',
  'REQUEUED',
  'REQUEUE_HOLD',
  'REQUEUE_FED',
  'RESIZING',
  'SUSPENDED',
]);
const RUNNING = new Set(['RUNNING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING']);

export function mapSlurmState(state: string): JobInfo['status'] {
  if (PENDING.has(state)) return 'pending';
  if (RUNNING.has(state)) return 'running';
  return 'gone';
}

/** Parses `sbatch --parsable` output: `jobid` or `jobid;cluster`. */
export function parseSbatchOutput(stdout: string): string {
  const line = stdout.trim().split('\n').pop() ?? '';
  const id = line.split(';')[0] ?? '';
  if (!/^\d+(_\d+)?$/.test(id)) {
    throw new ExecutorError(`sbatch printed no job id: ${firstLines(stdout)}`);
  }
  return id;
}

export class SlurmExecutor implements Executor {
  readonly name = 'slurm' as const;
  private readonly env: NodeJS.ProcessEnv;
  private readonly timeoutMs: number;

  constructor(private readonly options: SlurmOptions = {}) {
    this.env = { ...process.env, ...(options.env ?? {}) };
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private argv(user: string, command: string, args: string[]): string[] {
    const prefix = (this.options.commandPrefix ?? []).map((p) => p.replaceAll('{user}', user));
    return [...prefix, command, ...args];
  }

  async submit({ user, script }: SubmitOptions): Promise<SubmitResult> {
    const res = await runCommand(this.argv(user, this.options.sbatch ?? 'sbatch', ['--parsable']), {
      input: script,
      env: this.env,
      timeoutMs: this.timeoutMs,
    });
    if (res.code !== 0) {
      throw new ExecutorError(`sbatch failed (exit ${res.code}): ${firstLines(res.stderr)}`);
    }
    return { jobId: parseSbatchOutput(res.stdout), data: null };
  }

  async status(jobs: readonly JobRef[]): Promise<Map<string, JobInfo>> {
    const result = new Map<string, JobInfo>();
    if (jobs.length === 0) return result;
    // By name rather than id: squeue fails the whole query when one id has been purged.
    const names = [...new Set(jobs.map((j) => j.jobName))].join(',');
    const res = await runCommand(
      [this.options.squeue ?? 'squeue', '--noheader', `--name=${names}`, '--format=%i|%T|%r'],
      { env: this.env, timeoutMs: this.timeoutMs },
    );
    if (res.code !== 0) {
      throw new ExecutorError(`squeue failed (exit ${res.code}): ${firstLines(res.stderr)}`);
    }
    const seen = new Map<string, JobInfo>();
    for (const line of res.stdout.split('\n')) {
      const [id, state, reason] = line.trim().split('|');
      if (!id || !state) continue;
      seen.set(id, {
        status: mapSlurmState(state),
        detail: state,
        ...(reason && reason !== 'None' ? { reason } : {}),
      });
    }
    for (const job of jobs) result.set(job.jobId, seen.get(job.jobId) ?? { status: 'gone' });
    return result;
  }

  async cancel(job: JobRef): Promise<void> {
    await this.scancel(job.user, [job.jobId]);
  }

  async cancelByName(jobName: string, user: string): Promise<void> {
    await this.scancel(user, [`--name=${jobName}`]);
  }

  private async scancel(user: string, args: string[]): Promise<void> {
    const res = await runCommand(this.argv(user, this.options.scancel ?? 'scancel', args), {
      env: this.env,
      timeoutMs: this.timeoutMs,
    });
    // A job that has already ended is what we wanted.
    if (res.code !== 0 && !/Invalid job id|already completing or completed/i.test(res.stderr)) {
      throw new ExecutorError(`scancel failed (exit ${res.code}): ${firstLines(res.stderr)}`);
    }
  }
}
