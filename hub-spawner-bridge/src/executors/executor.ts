/** How the bridge runs a session's batch script: on Slurm or as a local child process. */

export type JobStatus = 'pending' | 'running' | 'gone';

export interface JobRef {
  jobId: string;
  jobName: string;
  user: string;
  /** Executor-specific facts recorded at submission (JSON), e.g. a local process id. */
  data: string | null;
}

export interface JobInfo {
  status: JobStatus;
  /** The raw batch-system state (e.g. PENDING), for messages. */
  detail?: string;
  /** Why a job waits (Slurm's reason), for progress messages. */
  reason?: string;
}

export interface SubmitResult {
  jobId: string;
  data: string | null;
}

export interface SubmitOptions {
  jobName: string;
  user: string;
  /** The whole batch script; goes to the executor on stdin, never onto a command line. */
  script: string;
}

export interface Executor {
  readonly name: 'slurm' | 'local';
  submit(options: SubmitOptions): Promise<SubmitResult>;
  /** The status of each job; a job the batch system no longer knows is `gone`. */
  status(jobs: readonly JobRef[]): Promise<Map<string, JobInfo>>;
  cancel(job: JobRef): Promise<void>;
  /**
   * Cancels any job named `jobName` whether or not its id is known: the safety net after a
   * submission that failed half-way (e.g. sbatch created the job but its answer got lost).
   */
  cancelByName(jobName: string, user: string): Promise<void>;
}
