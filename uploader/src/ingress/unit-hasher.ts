/**
 * SHA-256 of resume units on a thread of its own. The ingress writes every byte it receives
 * and must hash every unit; on one thread the two run one after the other for each chunk,
 * which is on the critical path of an upload (tus has one PATCH per upload in flight). Here
 * the event loop copies a unit's bytes into a buffer as they pass and hands the whole unit to
 * the hashing thread, which works while the next bytes are written. Buffers travel back and
 * forth (transferred, never copied) and are reused, so no new memory is touched per unit.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { HashDone, HashJob } from './unit-hasher-worker.js';

/** From the compiled output even when this module runs from TypeScript (jest). */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts')
    ? join(dirname(here), '..', '..', 'dist', 'ingress', 'unit-hasher-worker.js')
    : join(dirname(here), 'unit-hasher-worker.js');
}

/** Buffers kept for reuse; more than this in flight at once are allocated and dropped. */
const SPARE = 16;

export class UnitHasher {
  private readonly worker: Worker;
  private readonly free: ArrayBuffer[] = [];
  private readonly waiting = new Map<
    number,
    { resolve: (h: string) => void; reject: (e: Error) => void }
  >();
  private nextId = 0;
  private failure: Error | undefined;

  constructor(readonly unitBytes: number) {
    this.worker = new Worker(workerFile());
    // An idle hasher does not keep the process alive.
    this.worker.unref();
    this.worker.on('message', (m: HashDone) => {
      this.release(new Uint8Array(m.buf));
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      w?.resolve(m.hash);
    });
    const fail = (e: Error): void => {
      this.failure = e;
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the unit hasher exited (${code})`)));
  }

  /** A buffer of unitBytes to fill with one unit. */
  buffer(): Uint8Array {
    return new Uint8Array(this.free.pop() ?? new ArrayBuffer(this.unitBytes));
  }

  /** Gives back a buffer from buffer() that was not handed to hash(). */
  release(buf: Uint8Array): void {
    if (this.free.length < SPARE && buf.buffer.byteLength === this.unitBytes) {
      this.free.push(buf.buffer as ArrayBuffer);
    }
  }

  /** Hashes the first `length` bytes of `buf` (from buffer()), which must not be used after. */
  hash(buf: Uint8Array, length: number): Promise<string> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const job: HashJob = { id, buf: buf.buffer as ArrayBuffer, length };
      this.worker.postMessage(job, [job.buf]);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
