/**
 * The audit trail of a mount: open, create, rename and unlink events with the calling process,
 * batched to the key service (never file contents, never plaintext names: the KMS sees cipher
 * paths and file IDs, which only key holders can map back to names).
 *
 * Events are flushed every `flushMs` or when a batch is full; a failed flush is retried with
 * the next one. The queue is bounded: past `maxQueue` the oldest events are dropped and the
 * number dropped is reported in the next batch's log line and as its own event count.
 */
import type { Logger } from 'pino';
import type { CallerResolver } from './caller.js';
import type { AuditRecord } from './filesystem.js';
import type { AuditEvent, KeyService } from './key-source.js';

export interface AuditOptions {
  flushMs?: number;
  maxBatch?: number;
  maxQueue?: number;
}

export class AuditLog {
  private queue: AuditEvent[] = [];
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxQueue: number;

  constructor(
    private readonly service: KeyService,
    private readonly callers: CallerResolver | undefined,
    private readonly log: Logger,
    options: AuditOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 1000;
    this.maxBatch = options.maxBatch ?? 500;
    this.maxQueue = options.maxQueue ?? 100_000;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }

  /** Records an event; resolves the caller while it is still blocked in its system call. */
  async record(r: AuditRecord): Promise<void> {
    const caller = await this.callers?.resolve(r.plainTarget ?? r.plainPath);
    const event: AuditEvent = {
      action: r.action,
      at: new Date().toISOString(),
      cipherPath: r.cipherPath,
      ...(r.cipherTarget !== undefined ? { cipherTarget: r.cipherTarget } : {}),
      ...(r.fileId !== undefined ? { fileId: r.fileId } : {}),
      ...(r.mode !== undefined ? { mode: r.mode } : {}),
      ...(caller ? { pid: caller.pid } : {}),
      ...(caller?.exe !== undefined ? { exe: caller.exe } : {}),
    };
    this.queue.push(event);
    if (this.queue.length > this.maxQueue) {
      this.dropped += this.queue.length - this.maxQueue;
      this.queue.splice(0, this.queue.length - this.maxQueue);
    }
    if (this.queue.length >= this.maxBatch) void this.flush();
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Sends everything queued; one flush at a time. */
  flush(): Promise<void> {
    this.flushing ??= this.doFlush().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
    if (this.queue.length > 0) await this.flush();
  }

  private async doFlush(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.slice(0, this.maxBatch);
      try {
        await this.service.auditBatch(batch);
      } catch (err) {
        this.log.warn(
          { err: (err as Error).message, pending: this.queue.length },
          'audit flush failed; will retry',
        );
        return;
      }
      this.queue.splice(0, batch.length);
      if (this.dropped > 0) {
        this.log.error({ dropped: this.dropped }, 'audit events dropped: queue overflow');
        this.dropped = 0;
      }
    }
  }
}
