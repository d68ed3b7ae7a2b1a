/**
 * Revocation: the key service is polled for the member's status; when the membership has ended
 * (or its access window closes, which is also enforced locally so an unreachable service
 * cannot extend it) `onEnd` runs once. A poll that fails keeps the current state: the window
 * end still applies.
 */
import type { Logger } from 'pino';
import type { KeyService } from './key-source.js';

export class MembershipWatch {
  private timer: NodeJS.Timeout | undefined;
  private validUntil: Date | undefined;
  private ended = false;
  private polling = false;

  constructor(
    private readonly service: KeyService,
    private readonly intervalMs: number,
    private readonly onEnd: (reason: string) => void,
    private readonly log: Logger,
  ) {}

  start(validUntil?: Date): void {
    this.validUntil = validUntil;
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.stop();
    this.onEnd(reason);
  }

  async poll(): Promise<void> {
    if (this.ended || this.polling) return;
    if (this.validUntil && Date.now() >= this.validUntil.getTime()) {
      this.end('the access window has closed');
      return;
    }
    this.polling = true;
    try {
      const status = await this.service.membershipStatus();
      if (!status.active) this.end(status.reason ?? 'membership ended');
      else this.validUntil = status.validUntil;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'membership poll failed');
    } finally {
      this.polling = false;
    }
  }
}
