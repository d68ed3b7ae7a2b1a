/**
 * One-time pickups: how a job collects its secrets (the user's unlocked KEK, the hub API token,
 * the agent secret) without them ever appearing in the batch script, argv, the environment or
 * the Slurm job record. The script carries only a random token; the job agent presents it once,
 * together with its job id, and receives the secrets over HTTP. Pickups live in memory only (a
 * bridge restart voids them: the job then fails cleanly and the user starts again).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface PickupSecrets {
  /** The KEK hand-over bytes (JSON {"kem", "privateKey"}), zeroed once collected or expired. */
  kek: Buffer | null;
  /** Everything else the agent needs; may hold the hub API token. */
  config: Record<string, unknown>;
}

interface Pickup extends PickupSecrets {
  tokenHash: Buffer;
  jobId: string | null;
  expiresAt: number;
}

export type PickupFailure = 'unknown' | 'bad-token' | 'wrong-job' | 'expired' | 'not-ready';

export class PickupError extends Error {
  constructor(readonly reason: PickupFailure) {
    super(`pickup refused: ${reason}`);
    this.name = 'PickupError';
  }
}

const hash = (token: string) => createHash('sha256').update(token, 'utf8').digest();

export class PickupStore {
  private readonly pickups = new Map<string, Pickup>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Creates the pickup for a session and returns its token (32 random bytes, base64url). */
  create(sessionId: string, secrets: PickupSecrets): string {
    this.discard(sessionId);
    const token = randomBytes(32).toString('base64url');
    this.pickups.set(sessionId, {
      ...secrets,
      tokenHash: hash(token),
      jobId: null,
      expiresAt: this.now() + this.ttlMs,
    });
    return token;
  }

  /** Binds the pickup to the job the executor created; only that job may collect it. */
  bind(sessionId: string, jobId: string): void {
    const p = this.pickups.get(sessionId);
    if (p) p.jobId = jobId;
  }

  /** Restarts the clock once the job runs, so time spent queued does not void the pickup. */
  extend(sessionId: string): void {
    const p = this.pickups.get(sessionId);
    if (p) p.expiresAt = Math.max(p.expiresAt, this.now() + this.ttlMs);
  }

  has(sessionId: string): boolean {
    return this.pickups.has(sessionId);
  }

  /**
   * Hands the secrets over exactly once. A wrong token or job leaves the pickup in place (the
   * rightful job may still come), an expired one is destroyed.
   */
  collect(sessionId: string, jobId: string, token: string): PickupSecrets {
    const p = this.pickups.get(sessionId);
    if (!p) throw new PickupError('unknown');
    if (!timingSafeEqual(p.tokenHash, hash(token))) throw new PickupError('bad-token');
    if (p.expiresAt <= this.now()) {
      this.discard(sessionId);
      throw new PickupError('expired');
    }
    if (p.jobId === null) throw new PickupError('not-ready');
    if (p.jobId !== jobId) throw new PickupError('wrong-job');
    this.pickups.delete(sessionId);
    return { kek: p.kek, config: p.config };
  }

  discard(sessionId: string): void {
    const p = this.pickups.get(sessionId);
    if (!p) return;
    p.kek?.fill(0);
    this.pickups.delete(sessionId);
  }

  /** Destroys expired pickups; returns the sessions whose pickup expired unused. */
  sweep(): string[] {
    const expired: string[] = [];
    for (const [id, p] of this.pickups) {
      if (p.expiresAt <= this.now()) {
        expired.push(id);
        this.discard(id);
      }
    }
    return expired;
  }
}
