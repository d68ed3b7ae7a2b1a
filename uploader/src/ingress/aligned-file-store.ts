/**
 * A tus file store that keeps only whole resume units. A PATCH cut off by a lost connection,
 * a killed client or a killed server leaves a torn unit at the end of the file; the client
 * cannot re-create those exact bytes (random nonces), so the torn tail is cut off and the
 * offset the client resumes from is always a unit boundary.
 *
 * It also hashes every unit as it passes on its way to the file (on a thread of its own, see
 * unit-hasher.ts), so a finished upload's digest is known without reading the file again. The hashes live in memory only: after a
 * restart (or any write this process did not see from the file's start) `written` answers
 * undefined and the caller reads the stored file instead.
 */
import { createWriteStream } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FileStore } from '@tus/file-store';
import { ERRORS } from '@tus/utils';
import type { Upload } from '@tus/utils';
import type { Readable } from 'node:stream';
import { HEADER_LEN } from '@tre/crypto';
import { UNIT_CIPHER, alignDown, unitAt, unitCount, unitEnd } from '../units.js';
import { UnitHasher } from './unit-hasher.js';

/** Units received but not yet hashed, per write, before reading the body pauses. */
const MAX_UNHASHED = 4;

interface Hashed {
  size: number;
  /** SHA-256 of units [0, units.length), each of which passed through write() whole. */
  units: string[];
  /** The file header as it was written. */
  head: Buffer;
}

export class AlignedFileStore extends FileStore {
  private readonly hashed = new Map<string, Hashed>();
  private readonly sizes = new Map<string, number>();
  /** Unit 0 carries the header: the largest unit. */
  private readonly hasher = new UnitHasher(HEADER_LEN + UNIT_CIPHER);

  /** Stops the hashing thread. */
  async close(): Promise<void> {
    await this.hasher.close();
  }

  override async create(file: Upload): Promise<Upload> {
    const created = await super.create(file);
    if (file.size !== undefined) {
      this.sizes.set(file.id, file.size);
      this.hashed.set(file.id, { size: file.size, units: [], head: Buffer.alloc(0) });
    }
    return created;
  }

  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    const size = this.sizes.get(id);
    let h = this.hashed.get(id);
    if (size === undefined || !h || h.units.length < unitAt(offset, size)) {
      // Units before `offset` were written before this process saw them.
      this.hashed.delete(id);
      h = undefined;
    } else {
      h.units.length = unitAt(offset, size);
    }
    const record = h;
    const hasher = this.hasher;
    let pos = offset;
    let end = size !== undefined ? unitEnd(unitAt(offset, size), size) : 0;
    // Whole units go to the hashing thread as they fill up, in order; their digests are
    // collected once the body is written.
    let unit: Uint8Array | undefined = record ? hasher.buffer() : undefined;
    let fill = 0;
    const hashes: Promise<string>[] = [];
    let settled = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (!record || !unit || size === undefined) {
          pos += chunk.length;
          done(null, chunk);
          return;
        }
        if (pos < HEADER_LEN) {
          const take = chunk.subarray(0, HEADER_LEN - pos);
          record.head = Buffer.concat([record.head.subarray(0, pos), take]);
        }
        let off = 0;
        while (off < chunk.length && unit) {
          const take = Math.min(chunk.length - off, end - pos);
          unit.set(
            off === 0 && take === chunk.length ? chunk : chunk.subarray(off, off + take),
            fill,
          );
          fill += take;
          off += take;
          pos += take;
          if (pos === end) {
            const p = hasher.hash(unit, fill);
            p.then(
              () => settled++,
              () => undefined,
            );
            hashes.push(p);
            // Past the file's end nothing more is hashed (tus refuses such bytes before).
            unit = pos < size ? hasher.buffer() : undefined;
            fill = 0;
            end = unitEnd(unitAt(pos, size), size);
          }
        }
        pos += chunk.length - off;
        // At most a few units wait for the hashing thread: the body is read no faster.
        const behind = hashes.length - settled - MAX_UNHASHED;
        if (behind > 0)
          hashes[hashes.length - 1 - MAX_UNHASHED]!.then(() => done(null, chunk), done);
        else done(null, chunk);
      },
    });
    let failed = false;
    try {
      await pipeline(
        readable,
        hashing,
        createWriteStream(this.pathOf(id), { flags: 'r+', start: offset }),
      );
    } catch {
      failed = true;
    }
    if (unit) hasher.release(unit);
    if (record) {
      // The units that passed whole stay known, also after a failed write (whose torn tail is
      // cut off below).
      for (const r of await Promise.allSettled(hashes)) {
        if (r.status !== 'fulfilled') {
          this.hashed.delete(id);
          break;
        }
        record.units.push(r.value);
      }
    }
    if (failed) {
      await this.dropTornUnit(id).catch(() => undefined);
      throw ERRORS.FILE_WRITE_ERROR;
    }
    return pos;
  }

  /** Every HEAD and PATCH reads the upload through here, under the upload's lock. */
  override async getUpload(id: string): Promise<Upload> {
    const upload = await super.getUpload(id);
    if (upload.size !== undefined) {
      this.sizes.set(id, upload.size);
      if (upload.offset < upload.size) {
        const aligned = alignDown(upload.offset, upload.size);
        if (aligned !== upload.offset) {
          await truncate(this.pathOf(id), aligned);
          upload.offset = aligned;
        }
      }
    }
    return upload;
  }

  /**
   * The hashes of every unit of a complete upload, if this process saw all of its bytes
   * written; undefined means "read the file".
   */
  written(id: string, size: number): { units: string[]; head: Buffer } | undefined {
    const h = this.hashed.get(id);
    return h && h.size === size && h.units.length === unitCount(size) ? h : undefined;
  }

  private async dropTornUnit(id: string): Promise<void> {
    await this.getUpload(id);
  }

  /** The path of an upload's data file; ids are validated hex before they reach the store. */
  pathOf(id: string): string {
    return join(this.directory, id);
  }

  /** Forgets an upload's tus metadata (its data file has been moved elsewhere). */
  async forget(id: string): Promise<void> {
    this.hashed.delete(id);
    this.sizes.delete(id);
    await this.configstore.delete(id).catch(() => undefined);
  }
}
