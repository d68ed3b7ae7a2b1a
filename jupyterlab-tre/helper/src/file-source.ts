/**
 * Where a filed file's ciphertext and DEK come from. Filing needs, per file, the gocryptfs file
 * ID, the size and SHA-256 of the ciphertext that reviewers and the requester will download, and
 * the DEK to wrap to them.
 *
 * - `SnapshotSource` (demo mode and tests, no trefs): encrypts a copy of the plaintext under a
 *   fresh DEK into the outbox, `<outbox>/<project>/<fileId>`. The copy is the frozen file: later
 *   edits in export/ do not change what was filed. The DEK exists only for the wraps.
 * - In a session the ciphertext is trefs's own file and the DEK comes from trefs's key agent
 *   (outside the container); see the README for what the agent must add (manifest and freeze).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { encryptFile, HEADER_LEN, parseHeader } from '@tre/crypto';

export interface PreparedFile {
  fileId: string;
  size: number;
  sha256: string;
  dek: Buffer;
  /** Where the frozen ciphertext lives. */
  location: string;
}

export interface FileSource {
  prepare(projectId: string, relPath: string, absPath: string): Promise<PreparedFile>;
}

export class SnapshotSource implements FileSource {
  constructor(readonly outbox: string) {}

  async prepare(projectId: string, _relPath: string, absPath: string): Promise<PreparedFile> {
    const dir = join(this.outbox, projectId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const dek = randomBytes(32);
    const tmp = join(dir, `.filing-${randomBytes(8).toString('hex')}`);
    try {
      await encryptFile(dek, absPath, tmp);
      const ct = await readFile(tmp);
      const fileId = parseHeader(ct.subarray(0, HEADER_LEN)).toString('hex');
      const location = join(dir, fileId);
      await rename(tmp, location);
      return {
        fileId,
        size: ct.length,
        sha256: createHash('sha256').update(ct).digest('hex'),
        dek,
        location,
      };
    } catch (e) {
      dek.fill(0);
      await rm(tmp, { force: true });
      throw e;
    }
  }
}

/** Reads a frozen ciphertext back (the download side in demo mode). */
export function snapshotPath(outbox: string, projectId: string, fileId: string): string {
  if (!/^[0-9a-f]{32}$/.test(fileId)) throw new Error('file id must be 32 hex digits');
  return join(outbox, projectId, fileId);
}
