/**
 * Where a filed file's ciphertext and DEK come from. Filing needs, per file, the gocryptfs file
 * ID, the size and SHA-256 of the ciphertext that reviewers and the requester will download, and
 * the DEK to wrap to them; and the files must not change once filed.
 *
 * - `AgentSource` (a session): the ciphertext is trefs's own file in the project tree. trefs's
 *   key agent (outside the container) freezes the files read-only for the request, gives the
 *   manifest of their ciphertext and each DEK. `tre download` later fetches that same file
 *   from the project tree.
 * - `SnapshotSource` (demo mode and tests, no trefs): encrypts a copy of the plaintext under a
 *   fresh DEK into the outbox, `<outbox>/<project>/<fileId>`. The copy is the frozen file: later
 *   edits in export/ do not change what was filed. The DEK exists only for the wraps.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { encryptFile, HEADER_LEN, parseHeader } from '@tre/crypto';
import type { ExportEntry } from './export-folder.js';
import type { KeyAgentClient } from './key-agent.js';

export interface PreparedFile {
  path: string;
  fileId: string;
  size: number;
  sha256: string;
  dek: Buffer;
}

export interface FileSource {
  /** Freezes the files for request `requestId`; their ciphertext facts and DEKs, in order. */
  prepare(projectId: string, requestId: number, entries: ExportEntry[]): Promise<PreparedFile[]>;
  /** Undoes the freeze of a filing that did not go through. */
  abandon(requestId: number): Promise<void>;
}

/** Paths inside the trefs mount: the project-relative path with a leading slash. */
export const mountPath = (projectPath: string): string => `/${projectPath}`;

export class AgentSource implements FileSource {
  constructor(readonly agent: KeyAgentClient) {}

  async prepare(
    _projectId: string,
    requestId: number,
    entries: ExportEntry[],
  ): Promise<PreparedFile[]> {
    const paths = entries.map((e) => mountPath(e.path));
    // Freeze first: the manifest then describes the ciphertext that stays until the lift.
    await this.agent.freeze(paths, requestId);
    const manifest = await this.agent.manifest(paths);
    const out: PreparedFile[] = [];
    try {
      for (const [i, m] of manifest.entries()) {
        out.push({
          path: (entries[i] as ExportEntry).path,
          fileId: m.fileId,
          size: m.size,
          sha256: m.sha256,
          dek: await this.agent.dek(m.path),
        });
      }
    } catch (e) {
      for (const p of out) p.dek.fill(0);
      throw e;
    }
    return out;
  }

  abandon(requestId: number): Promise<void> {
    return this.agent.lift(requestId);
  }
}

export class SnapshotSource implements FileSource {
  constructor(readonly outbox: string) {}

  async prepare(
    projectId: string,
    _requestId: number,
    entries: ExportEntry[],
  ): Promise<PreparedFile[]> {
    const out: PreparedFile[] = [];
    try {
      for (const e of entries)
        out.push({ ...(await this.snapshot(projectId, e.abs)), path: e.path });
    } catch (e) {
      for (const p of out) p.dek.fill(0);
      throw e;
    }
    return out;
  }

  async abandon(): Promise<void> {
    // Snapshots left behind are unreferenced ciphertext; the plaintext was never frozen.
  }

  private async snapshot(projectId: string, absPath: string): Promise<Omit<PreparedFile, 'path'>> {
    const dir = join(this.outbox, projectId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const dek = randomBytes(32);
    const tmp = join(dir, `.filing-${randomBytes(8).toString('hex')}`);
    try {
      await encryptFile(dek, absPath, tmp);
      const ct = await readFile(tmp);
      const fileId = parseHeader(ct.subarray(0, HEADER_LEN)).toString('hex');
      await rename(tmp, join(dir, fileId));
      return {
        fileId,
        size: ct.length,
        sha256: createHash('sha256').update(ct).digest('hex'),
        dek,
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
