/**
 * The daemon's side of dek-worker.ts: asks the worker thread for batches of fresh, wrapped
 * file keys. The worker is unreferenced (it never keeps the process alive) and stopped with
 * the key ring.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { PublicKey } from '@tre/crypto';
import type { DekReply, DekRequest, FreshDek } from './dek-worker.js';

/** Workers run compiled JavaScript: from the TypeScript sources (jest), take dist/'s copy. */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts')
    ? join(dirname(here), '..', 'dist', 'dek-worker.js')
    : join(dirname(here), 'dek-worker.js');
}

export class DekMaker {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (k: FreshDek[]) => void; reject: (e: Error) => void }
  >();

  constructor(
    private readonly projectId: string,
    private readonly recipient: PublicKey,
  ) {}

  make(count: number): Promise<FreshDek[]> {
    const worker = this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({
        id,
        count,
        projectId: this.projectId,
        recipient: this.recipient,
      } satisfies DekRequest);
    });
  }

  warmUp(): void {
    this.start();
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.fail(new Error('key maker stopped'));
    if (w) await w.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(workerFile());
    w.unref();
    w.on('message', (m: DekReply) => {
      const p = this.waiting.get(m.id);
      if (!p) return;
      this.waiting.delete(m.id);
      if ('error' in m) p.reject(new Error(`fresh key generation failed: ${m.error}`));
      else p.resolve(m.keys);
    });
    w.on('error', (err) => {
      this.worker = undefined;
      this.fail(err);
    });
    w.on('exit', () => {
      if (this.worker === w) this.worker = undefined;
      this.fail(new Error('key maker thread exited'));
    });
    this.worker = w;
    return w;
  }

  private fail(err: Error): void {
    for (const p of this.waiting.values()) p.reject(err);
    this.waiting.clear();
  }
}
