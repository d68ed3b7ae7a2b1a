/**
 * A tus-js-client file source that produces gocryptfs ciphertext on demand. tus asks for a
 * byte range starting at the server's offset (always a resume-unit boundary, see units.ts);
 * this source has the worker pool read, encrypt and hash the units covering it (the main
 * thread only hands out ranges and sends), reports their hashes before the bytes leave (so a
 * resumed run knows what the server may already hold), and encrypts the next chunk while the
 * current one is on the wire.
 */
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import {
  UNIT_BLOCKS,
  UNIT_PLAIN,
  isBoundary,
  unitAt,
  unitCount,
  unitEnd,
  unitStart,
} from './units.js';
import { FormatError, createHeader } from '@tre/crypto';
import type { ContentWorkerPool } from '@tre/crypto';

export interface EncryptingSourceOptions {
  path: string;
  plainSize: number;
  cipherSize: number;
  dek: Uint8Array;
  fileId: Uint8Array;
  pool: ContentWorkerPool;
  /** Units per tus chunk. */
  chunkUnits: number;
  /** Called with the hashes of units [first, first + hashes.length) before they are sent. */
  onUnits(first: number, hashes: string[]): Promise<void>;
}

export class SourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SourceError';
  }
}

/** A unit's ciphertext as it goes out (the header before unit 0's blocks) and its SHA-256. */
interface Unit {
  pieces: Buffer[];
  hash: string;
}

/** A chunk as consecutive pieces; tus-js-client reads its length from `size`. */
export type SliceValue = Buffer[] & { size: number };

export class EncryptingSource {
  readonly size: number;
  private fh: Promise<FileHandle> | undefined;
  private readonly units = new Map<number, Promise<Unit>>();
  /** True once the last slice was the file's end (its request is the final one). */
  finalSliced = false;

  constructor(private readonly o: EncryptingSourceOptions) {
    this.size = o.cipherSize;
  }

  /** The byte range tus may send in one chunk from `start`: whole units only. */
  chunkEnd(start: number): number {
    const k = unitAt(start, this.size);
    return unitEnd(Math.min(k + this.o.chunkUnits, unitCount(this.size)) - 1, this.size);
  }

  async slice(start: number, _end: number): Promise<{ value: SliceValue | null; done: boolean }> {
    if (!isBoundary(start, this.size)) {
      throw new SourceError(`the server asked to resume at ${start}, not a unit boundary`);
    }
    const total = unitCount(this.size);
    const first = unitAt(start, this.size);
    this.finalSliced = false;
    if (first >= total) {
      this.finalSliced = true;
      return { value: null, done: true };
    }
    const last = Math.min(first + this.o.chunkUnits, total);
    for (const k of this.units.keys()) if (k < first) this.units.delete(k);
    const units: Unit[] = [];
    for (let k = first; k < last; k++) units.push(await this.unit(k));
    for (let k = last; k < Math.min(last + this.o.chunkUnits, total); k++)
      void this.unit(k).catch(() => undefined);
    await this.o.onUnits(
      first,
      units.map((u) => u.hash),
    );
    // The pieces go out as they came from the workers (see http-stack.ts): no copy.
    const value = units.flatMap((u) => u.pieces) as SliceValue;
    value.size = value.reduce((n, b) => n + b.length, 0);
    const done = unitStart(first) + value.size >= this.size;
    this.finalSliced = done;
    return { value, done };
  }

  close(): void {
    const fh = this.fh;
    const running = [...this.units.values()];
    this.fh = undefined;
    this.units.clear();
    // Workers read through the descriptor: it is closed only when none still can (a reused
    // descriptor number would have them read another file).
    void Promise.allSettled(running).then(async () => (await fh)?.close().catch(() => undefined));
  }

  private unit(k: number): Promise<Unit> {
    let p = this.units.get(k);
    if (!p) {
      p = this.encryptUnit(k);
      this.units.set(k, p);
    }
    return p;
  }

  /** A unit's ciphertext (its sealed blocks, after the file header for unit 0) and hash. */
  private async encryptUnit(k: number): Promise<Unit> {
    this.fh ??= open(this.o.path, 'r');
    const fh = await this.fh;
    const offset = k * UNIT_PLAIN;
    const len = Math.min(UNIT_PLAIN, this.o.plainSize - offset);
    const header = k === 0 ? createHeader(this.o.fileId) : undefined;
    try {
      const sealed = await this.o.pool.sealRange(
        this.o.dek,
        this.o.fileId,
        k * UNIT_BLOCKS,
        fh.fd,
        len,
        header,
      );
      return {
        pieces: header ? [header, sealed.data] : [sealed.data],
        hash: sealed.sha256.toString('hex'),
      };
    } catch (e) {
      if (e instanceof FormatError) {
        throw new SourceError(`${this.o.path} shrank while it was being uploaded`);
      }
      throw e;
    }
  }
}
