/**
 * A tus file store that keeps only whole resume units. A PATCH cut off by a lost connection,
 * a killed client or a killed server leaves a torn unit at the end of the file; the client
 * cannot re-create those exact bytes (random nonces), so the torn tail is cut off and the
 * offset the client resumes from is always a unit boundary.
 *
 * It also hashes every unit as it passes on its way to the file, so a finished upload's
 * digest is known without reading the file again. The hashes live in memory only: after a
 * restart (or any write this process did not see from the file's start) `written` answers
 * undefined and the caller reads the stored file instead.
 */
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
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
import { alignDown, unitAt, unitCount, unitEnd } from '../units.js';

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
    const units = h?.units;
    const record = h;
    let pos = offset;
    let end = size !== undefined ? unitEnd(unitAt(offset, size), size) : 0;
    let hash: Hash | undefined = units ? createHash('sha256') : undefined;
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done) {
        if (units && hash && size !== undefined) {
          if (record && pos < HEADER_LEN) {
            const take = chunk.subarray(0, HEADER_LEN - pos);
            record.head = Buffer.concat([record.head.subarray(0, pos), take]);
          }
          let off = 0;
          while (off < chunk.length) {
            const take = Math.min(chunk.length - off, end - pos);
            if (take <= 0) {
              hash = undefined;
              break;
            }
            hash.update(
              off === 0 && take === chunk.length ? chunk : chunk.subarray(off, off + take),
            );
            off += take;
            pos += take;
            if (pos === end) {
              units.push(hash.digest('hex'));
              hash = createHash('sha256');
              end = unitEnd(unitAt(pos, size), size);
            }
          }
        } else pos += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        readable,
        hashing,
        createWriteStream(this.pathOf(id), { flags: 'r+', start: offset }),
      );
    } catch {
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
