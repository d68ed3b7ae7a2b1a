/**
 * The bridge's core: starts, tracks and stops sessions. One session = one batch job running the
 * job agent, which collects its secrets through a one-time pickup, starts the container and
 * reports where it listens; the gateway then routes the hub's traffic to it.
 */
import { randomBytes, randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { decryptKeyFile } from '@tre/crypto';
import type { Logger } from 'pino';
import {
  ConflictError,
  InvalidRequestError,
  KeyUnlockError,
  NotFoundError,
  PolicyDeniedError,
  PolicyUnavailableError,
  UnauthorizedError,
  BridgeError,
} from './errors.js';
import type { Executor, JobRef } from './executors/executor.js';
import type { BridgeMetrics } from './metrics.js';
import { PickupError, PickupStore } from './pickup.js';
import type { PolicyClient, PolicyRequest, ProjectChoice } from './policy.js';
import type { SessionEvent, SessionRecord, SessionState, SessionStore } from './store.js';
import type { BatchTemplate } from './template.js';

export interface ResourceLimits {
  cpus: { max: number; default: number };
  memoryGb: { max: number; default: number };
  /** GPUs per session through `--gres=<gresName>:<n>`; max 0 offers none. */
  gpus: { max: number; default: number; gresName: string };
  hours: { max: number; default: number };
}

export const DEFAULT_RESOURCES: ResourceLimits = {
  cpus: { max: 4, default: 1 },
  memoryGb: { max: 16, default: 2 },
  gpus: { max: 0, default: 0, gresName: 'gpu' },
  hours: { max: 12, default: 4 },
};

export interface SessionOptions {
  project: string;
  cpus?: number;
  memoryGb?: number;
  gpus?: number;
  hours?: number;
}

export interface StartRequest {
  user: string;
  serverName: string;
  /** The hub's URL prefix for this server, e.g. /user/alice/ (the gateway routes on it). */
  baseUrl: string;
  options: SessionOptions;
  /** The environment the spawner computed for jupyter-server (hub token, OAuth client, ...). */
  env: Record<string, string>;
  /** The user's hub API token for asking the KMS on their behalf. */
  userToken?: string;
  /** Unlocks the user's KEK: the passphrase and, optionally, the key file itself. */
  key?: { passphrase: string; keyFile?: unknown };
}

export interface SessionView {
  id: string;
  user: string;
  serverName: string;
  project: string;
  executor: string;
  jobId: string | null;
  state: SessionState;
  message: string;
  /** Where the hub's proxy sends this server's traffic, once ready. */
  url: string | null;
  timeLimitMinutes: number;
  endsAt: string | null;
  createdAt: string;
}

export interface BridgeServiceOptions {
  store: SessionStore;
  executor: Executor;
  policy: PolicyClient;
  template: BatchTemplate;
  logger: Logger;
  metrics?: BridgeMetrics;
  /** How jobs reach the bridge (pickup, agent report). */
  bridgeUrl: string;
  /** The gateway the hub's proxy targets. */
  gatewayUrl: string;
  /** The command line that starts the job agent on the node (site-specific path). */
  agentCommand: string;
  resources?: ResourceLimits;
  slurm?: { partition?: string; account?: string; extraDirectives?: string[]; logDir?: string };
  /** Site settings for the agent: runtime, data root, trefs, ... (no secrets). */
  sessionConfig?: Record<string, unknown>;
  pickupTtlSeconds?: number;
  pollIntervalMs?: number;
  /** A session whose window ends sooner than this is refused. */
  minimumMinutes?: number;
}

const STOPPED: readonly SessionState[] = ['stopped', 'failed'];
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function checkInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidRequestError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

export class BridgeService {
  private readonly events = new EventEmitter();
  private readonly pickups: PickupStore;
  private readonly resources: ResourceLimits;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private readonly log: Logger;

  constructor(private readonly o: BridgeServiceOptions) {
    this.pickups = new PickupStore((o.pickupTtlSeconds ?? 600) * 1000);
    this.resources = o.resources ?? DEFAULT_RESOURCES;
    this.log = o.logger;
    this.events.setMaxListeners(0);
  }

  get executorName(): string {
    return this.o.executor.name;
  }

  /** Resumes tracking after a restart and starts the poll loop. */
  async start(): Promise<void> {
    for (const s of this.o.store.listActive()) {
      if (s.state === 'submitting') {
        // The bridge stopped mid-submission: a job may exist that nobody knows about.
        await this.o.executor.cancelByName(jobName(s.id), s.user).catch((err: unknown) => {
          this.log.warn({ session: s.id, err: String(err) }, 'cleanup after restart failed');
        });
        this.transition(s.id, 'failed', 0, 'the bridge restarted while submitting the job');
      }
      // Other sessions are tracked on; a pickup not yet collected was in memory only, so its
      // agent fails to collect it, exits, and the poll marks the session failed.
    }
    const interval = this.o.pollIntervalMs ?? 2000;
    const loop = () => {
      this.timer = setTimeout(() => {
        this.poll()
          .catch((err: unknown) => this.log.error({ err: String(err) }, 'poll failed'))
          .finally(loop);
      }, interval);
    };
    loop();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  resourceLimits(): ResourceLimits {
    return this.resources;
  }

  async options(
    req: PolicyRequest,
  ): Promise<{ projects: ProjectChoice[]; resources: ResourceLimits }> {
    let projects: ProjectChoice[];
    try {
      projects = await this.o.policy.projects(req);
    } catch (err) {
      if (err instanceof BridgeError) throw err;
      throw new PolicyUnavailableError(`cannot ask the KMS: ${(err as Error).message}`);
    }
    return { projects, resources: this.resources };
  }

  view(s: SessionRecord): SessionView {
    return {
      id: s.id,
      user: s.user,
      serverName: s.serverName,
      project: s.project,
      executor: s.executor,
      jobId: s.jobId,
      state: s.state,
      message: s.message,
      url: s.state === 'ready' ? this.o.gatewayUrl : null,
      timeLimitMinutes: s.timeLimitMinutes,
      endsAt: s.endsAt,
      createdAt: s.createdAt,
    };
  }

  get(id: string): SessionRecord {
    const s = this.o.store.get(id);
    if (!s) throw new NotFoundError(`no session ${id}`);
    return s;
  }

  private resolveOptions(o: SessionOptions) {
    const r = this.resources;
    const cpus = checkInt('cpus', o.cpus ?? r.cpus.default, 1, r.cpus.max);
    const memoryGb = checkInt('memoryGb', o.memoryGb ?? r.memoryGb.default, 1, r.memoryGb.max);
    const gpus = checkInt('gpus', o.gpus ?? r.gpus.default, 0, r.gpus.max);
    const hours = checkInt('hours', o.hours ?? r.hours.default, 1, r.hours.max);
    return { cpus, memoryGb, gpus, hours };
  }

  private directives(
    id: string,
    minutes: number,
    res: ReturnType<BridgeService['resolveOptions']>,
  ): string {
    const s = this.o.slurm ?? {};
    const lines = [
      `--job-name=${jobName(id)}`,
      `--time=${minutes}`,
      '--nodes=1',
      '--ntasks=1',
      `--cpus-per-task=${res.cpus}`,
      `--mem=${res.memoryGb}G`,
      // The job gets only what the script sets: nothing of the bridge's environment leaks in.
      '--export=NONE',
      ...(res.gpus > 0 ? [`--gres=${this.resources.gpus.gresName}:${res.gpus}`] : []),
      ...(s.partition ? [`--partition=${s.partition}`] : []),
      ...(s.account ? [`--account=${s.account}`] : []),
      ...(s.logDir ? [`--output=${s.logDir}/tre-session-%j.log`] : []),
      ...(s.extraDirectives ?? []),
    ];
    for (const l of lines) {
      if (/[\r\n]/.test(l)) throw new InvalidRequestError('a directive contains a line break');
    }
    return lines.map((l) => `#SBATCH ${l}`).join('\n');
  }

  async startSession(req: StartRequest): Promise<SessionView> {
    const started = Date.now();
    if (!req.options?.project) throw new InvalidRequestError('options.project is required');
    const res = this.resolveOptions(req.options);
    for (const name of Object.keys(req.env)) {
      if (!ENV_NAME.test(name)) throw new InvalidRequestError(`invalid environment name ${name}`);
    }
    if (!req.baseUrl.startsWith('/') || !req.baseUrl.endsWith('/')) {
      throw new InvalidRequestError('baseUrl must start and end with /');
    }
    const existing = this.o.store.findActive(req.user, req.serverName);
    if (existing) {
      throw new ConflictError(
        `${req.user} already has a session "${req.serverName}" (${existing.state})`,
      );
    }
    const policyReq: PolicyRequest = {
      user: req.user,
      ...(req.userToken ? { token: req.userToken } : {}),
    };
    let decision;
    try {
      decision = await this.o.policy.checkSpawn(policyReq, req.options.project);
    } catch (err) {
      if (err instanceof BridgeError) throw err;
      throw new PolicyUnavailableError(`cannot ask the KMS: ${(err as Error).message}`);
    }
    if (!decision.allow) {
      this.o.metrics?.spawns.labels('refused').inc();
      this.log.info(
        {
          event: 'spawn-refused',
          user: req.user,
          project: req.options.project,
          reason: decision.reason,
        },
        'policy refused the session',
      );
      throw new PolicyDeniedError(decision.reason, decision.message);
    }
    let minutes = res.hours * 60;
    if (decision.windowEnd) {
      const left = Math.floor((decision.windowEnd.getTime() - Date.now()) / 60_000);
      const minimum = this.o.minimumMinutes ?? 5;
      if (left < minimum) {
        throw new PolicyDeniedError(
          'window_ending',
          `access to ${req.options.project} ends at ${decision.windowEnd.toISOString()}, too soon for a session`,
        );
      }
      minutes = Math.min(minutes, left);
    }
    const kek = req.key ? await this.unlock(policyReq, req.key) : null;

    const id = randomUUID();
    const agentSecret = randomBytes(32).toString('base64url');
    let script: string;
    try {
      const token = this.pickups.create(id, {
        kek,
        config: {
          sessionId: id,
          user: req.user,
          project: req.options.project,
          baseUrl: req.baseUrl,
          agentSecret,
          env: req.env,
          timeLimitMinutes: minutes,
          endsAt: decision.windowEnd?.toISOString() ?? null,
          session: this.o.sessionConfig ?? {},
        },
      });
      script = this.o.template.render({
        directives: this.directives(id, minutes, res),
        session_id: id,
        user: req.user,
        project: req.options.project,
        bridge_url: this.o.bridgeUrl,
        agent_command: this.o.agentCommand,
        pickup_token: token,
        job_name: jobName(id),
      });
    } catch (err) {
      this.pickups.discard(id);
      throw err;
    }
    this.o.store.insert({
      id,
      user: req.user,
      serverName: req.serverName,
      baseUrl: req.baseUrl,
      project: req.options.project,
      executor: this.o.executor.name,
      jobId: null,
      executorData: null,
      state: 'submitting',
      message: 'submitting the job',
      agentHost: null,
      agentPort: null,
      agentSecret,
      timeLimitMinutes: minutes,
      endsAt: decision.windowEnd?.toISOString() ?? null,
    });
    this.emit(id, this.o.store.addEvent(id, 'submitting', 10, 'submitting the job'));
    let jobId: string | null = null;
    try {
      const submitted = await this.o.executor.submit({
        jobName: jobName(id),
        user: req.user,
        script,
      });
      jobId = submitted.jobId;
      this.pickups.bind(id, jobId);
      this.o.store.update(id, { jobId, executorData: submitted.data });
      this.transition(id, 'pending', 20, `job ${jobId} submitted`);
    } catch (err) {
      this.pickups.discard(id);
      await this.cleanupFailedStart(id, req.user, jobId);
      const message = err instanceof BridgeError ? err.message : 'submission failed';
      this.transition(id, 'failed', 0, message);
      this.o.metrics?.spawns.labels('failed').inc();
      this.log.error(
        { event: 'submit-failed', session: id, user: req.user, err: message },
        'submission failed',
      );
      throw err;
    }
    this.o.metrics?.spawns.labels('submitted').inc();
    this.o.metrics?.submitSeconds.observe((Date.now() - started) / 1000);
    this.log.info(
      {
        event: 'spawn',
        session: id,
        user: req.user,
        project: req.options.project,
        job: jobId,
        executor: this.o.executor.name,
        minutes,
      },
      'session submitted',
    );
    return this.view(this.get(id));
  }

  /** No job may outlive a failed start: cancel by id if known, and by name in any case. */
  private async cleanupFailedStart(id: string, user: string, jobId: string | null): Promise<void> {
    const name = jobName(id);
    const s = this.o.store.get(id);
    try {
      if (jobId)
        await this.o.executor.cancel({ jobId, jobName: name, user, data: s?.executorData ?? null });
      await this.o.executor.cancelByName(name, user);
    } catch (err) {
      this.log.error({ session: id, err: String(err) }, 'could not cancel after a failed start');
    }
  }

  private async unlock(
    req: PolicyRequest,
    key: { passphrase: string; keyFile?: unknown },
  ): Promise<Buffer> {
    const file = key.keyFile ?? (await this.o.policy.keyFile(req));
    if (!file) throw new KeyUnlockError(`${req.user} has no key file on record`);
    let kp;
    try {
      kp = await decryptKeyFile(file, key.passphrase);
    } catch {
      throw new KeyUnlockError('the passphrase does not unlock the key file');
    }
    const priv = Buffer.from(kp.privateKey);
    try {
      return Buffer.from(
        JSON.stringify({ kem: kp.kem, privateKey: priv.toString('base64url') }),
        'utf8',
      );
    } finally {
      priv.fill(0);
      kp.privateKey.fill(0);
    }
  }

  async stopSession(id: string): Promise<SessionView> {
    const s = this.get(id);
    if (STOPPED.includes(s.state)) return this.view(s);
    this.pickups.discard(id);
    this.transition(id, 'stopping', 0, 'stopping');
    await this.cancelJob(s);
    await this.poll();
    return this.view(this.get(id));
  }

  private async cancelJob(s: SessionRecord): Promise<void> {
    if (s.jobId) {
      await this.o.executor.cancel({
        jobId: s.jobId,
        jobName: jobName(s.id),
        user: s.user,
        data: s.executorData,
      });
    } else {
      await this.o.executor.cancelByName(jobName(s.id), s.user);
    }
  }

  /** Hands the job its secrets, once (see pickup.ts). */
  collect(sessionId: string, jobId: string, token: string) {
    const s = this.o.store.get(sessionId);
    if (!s || STOPPED.includes(s.state) || s.state === 'stopping') {
      throw new PickupError('unknown');
    }
    const secrets = this.pickups.collect(sessionId, jobId, token);
    this.transition(
      sessionId,
      s.state === 'ready' ? 'ready' : 'running',
      60,
      'the job collected its keys',
    );
    this.log.info(
      { event: 'pickup', session: sessionId, job: jobId, withKey: secrets.kek !== null },
      'pickup collected',
    );
    return secrets;
  }

  /** The agent says where it listens; it proves itself with the per-job secret. */
  agentReady(sessionId: string, secret: string, host: string, port: number): SessionView {
    const s = this.o.store.get(sessionId);
    if (!s || !timingSafeEqual(digest(s.agentSecret), digest(secret)))
      throw new UnauthorizedError();
    if (STOPPED.includes(s.state) || s.state === 'stopping') {
      throw new ConflictError(`session ${sessionId} is ${s.state}`);
    }
    this.o.store.update(sessionId, { agentHost: host, agentPort: port });
    this.transition(sessionId, 'ready', 90, `the session is up on ${host}`);
    return this.view(this.get(sessionId));
  }

  /** The agent reports a failure before it could come up (e.g. the container did not start). */
  agentFailed(sessionId: string, secret: string, message: string): void {
    const s = this.o.store.get(sessionId);
    if (!s || !timingSafeEqual(digest(s.agentSecret), digest(secret)))
      throw new UnauthorizedError();
    this.o.store.update(sessionId, { message: message.slice(0, 500) });
    this.emit(sessionId, this.o.store.addEvent(sessionId, s.state, 0, message.slice(0, 500)));
  }

  eventsSince(id: string, after: number): SessionEvent[] {
    this.get(id);
    return this.o.store.events(id, after);
  }

  /** Resolves with new events after `after`, or an empty list when `timeoutMs` passes. */
  waitForEvents(id: string, after: number, timeoutMs: number): Promise<SessionEvent[]> {
    const now = this.eventsSince(id, after);
    if (now.length > 0 || timeoutMs <= 0) return Promise.resolve(now);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.events.off(id, done);
        resolve(this.o.store.events(id, after));
      };
      const timer = setTimeout(done, timeoutMs);
      this.events.on(id, done);
    });
  }

  private emit(id: string, event: SessionEvent): void {
    this.events.emit(id, event);
  }

  private transition(id: string, state: SessionState, progress: number, message: string): void {
    const before = this.o.store.get(id);
    if (before && before.state === state && before.message === message) return;
    this.o.store.update(id, { state, message });
    this.emit(id, this.o.store.addEvent(id, state, progress, message));
  }

  /** One round of tracking: job states from the executor, window ends, expired pickups. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      this.pickups.sweep();
      const active = this.o.store.listActive().filter((s) => s.jobId !== null);
      this.o.metrics?.active.set(active.length);
      if (active.length === 0) return;
      const refs: JobRef[] = active.map((s) => ({
        jobId: s.jobId as string,
        jobName: jobName(s.id),
        user: s.user,
        data: s.executorData,
      }));
      const statuses = await this.o.executor.status(refs);
      for (const s of active) {
        const info = statuses.get(s.jobId as string);
        if (!info) continue;
        if (info.status === 'gone') {
          this.pickups.discard(s.id);
          if (s.state === 'stopping' || s.state === 'ready') {
            this.transition(s.id, 'stopped', 100, `job ${s.jobId} has ended`);
          } else {
            this.transition(
              s.id,
              'failed',
              0,
              `job ${s.jobId} ended before the session came up${s.message && s.state === 'running' ? `: ${s.message}` : ''}`,
            );
          }
          continue;
        }
        if (s.endsAt && Date.now() >= Date.parse(s.endsAt) && s.state !== 'stopping') {
          this.transition(s.id, 'stopping', 0, 'the access window has ended');
          await this.cancelJob(s);
          continue;
        }
        if (info.status === 'pending' && s.state === 'pending') {
          const why = info.reason ? ` (${info.reason})` : '';
          this.transition(s.id, 'pending', 30, `job ${s.jobId} is waiting in the queue${why}`);
        } else if (info.status === 'running' && s.state === 'pending') {
          this.pickups.extend(s.id);
          this.transition(s.id, 'running', 50, `job ${s.jobId} is running; starting the container`);
        }
      }
    } finally {
      this.polling = false;
    }
  }
}

export function jobName(sessionId: string): string {
  return `tre-${sessionId}`;
}
