/**
 * A tus file store that keeps only whole resume units. A PATCH cut off by a lost connection,
 * a killed client or a killed server leaves a torn unit at the end of the file; the client
 * cannot re-create those exact bytes (random nonces), so the torn tail is cut off and the
 * offset the client resumes from is always a unit boundary.
 */
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { FileStore } from '@tus/file-store';
import type { Upload } from '@tus/utils';
import type { Readable } from 'node:stream';
import { alignDown } from '../units.js';

export class AlignedFileStore extends FileStore {
  override async write(readable: Readable, id: string, offset: number): Promise<number> {
    try {
      return await super.write(readable, id, offset);
    } catch (err) {
      await this.dropTornUnit(id).catch(() => undefined);
      throw err;
    }
  }

  /** Every HEAD and PATCH reads the upload through here, under the upload's lock. */
  override async getUpload(id: string): Promise<Upload> {
    const upload = await super.getUpload(id);
    if (upload.size !== undefined && upload.offset < upload.size) {
      const aligned = alignDown(upload.offset, upload.size);
      if (aligned !== upload.offset) {
        await truncate(this.pathOf(id), aligned);
        upload.offset = aligned;
      }
    }
    return upload;
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
    await this.configstore.delete(id).catch(() => undefined);
  }
}
