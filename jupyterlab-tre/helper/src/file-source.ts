/**
 * Where a filed file's ciphertext and wrapped DEKs come from. Filing needs, per file, the
 * gocryptfs file ID, the size and SHA-256 of the ciphertext that reviewers and the requester
 * will download, and its DEK wrapped to each of them; and the files must not change once filed.
 *
 * - `AgentSource` (a session): the ciphertext is trefs's own file in the project tree. trefs's
 *   key agent (outside the container) freezes the files for the request in every mount of the
 *   project, then gives the manifest of their ciphertext with each DEK already wrapped to the
 *   requester and every reviewer: no DEK enters the container. `tre download` later fetches
 *   that same file from the project tree.
 * - `SnapshotSource` (demo mode and tests, no trefs): encrypts a copy of the plaintext under a
 *   fresh DEK into the outbox, `<outbox>/<project>/<fileId>`, and wraps the DEK here. The copy
 *   is the frozen file: later edits in export/ do not change what was filed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  egressContext,
  encryptFile,
  HEADER_LEN,
  parseHeader,
  wrapKey,
  type PublicKey,
  type WrappedKey,
} from '@tre/crypto';
import type { ExportEntry } from './export-folder.js';
import type { KeyAgentClient } from './key-agent.js';

export interface PreparedFile {
  path: string;
  fileId: string;
  size: number;
  sha256: string;
  keys: Array<{ username: string; wrapped: WrappedKey }>;
}

/** The requester and the reviewers with their current KEKs. */
export type Recipients = Array<[string, PublicKey]>;

export interface FileSource {
  /** Whether the DEKs are wrapped here (to `recipients`) or by the source itself. */
  readonly wrapsHere: boolean;
  /** Freezes the files for request `requestId`; their ciphertext facts and wraps, in order. */
  prepare(
    projectId: string,
    requestId: number,
    entries: ExportEntry[],
    recipients: Recipients,
  ): Promise<PreparedFile[]>;
  /** Lifts the freeze of request `requestId`; false if there was none to lift. */
  abandon(requestId: number): Promise<boolean>;
}

export class AgentSource implements FileSource {
  readonly wrapsHere = false;

  constructor(readonly agent: KeyAgentClient) {}

  async prepare(
    _projectId: string,
    requestId: number,
    entries: ExportEntry[],
  ): Promise<PreparedFile[]> {
    // trefs finds the recipients itself (the KMS's request and project) and wraps there.
    return this.agent.freeze(
      entries.map((e) => e.path),
      requestId,
    );
  }

  abandon(requestId: number): Promise<boolean> {
    return this.agent.lift(requestId);
  }
}

export class SnapshotSource implements FileSource {
  readonly wrapsHere = true;

  constructor(readonly outbox: string) {}

  async prepare(
    projectId: string,
    _requestId: number,
    entries: ExportEntry[],
    who: Recipients,
  ): Promise<PreparedFile[]> {
    const out: PreparedFile[] = [];
    for (const e of entries) {
      const snap = await this.snapshot(projectId, e.abs);
      try {
        const keys = [];
        for (const [username, pk] of who) {
          keys.push({
            username,
            wrapped: await wrapKey(snap.dek, pk, egressContext(projectId, snap.fileId, username)),
          });
        }
        out.push({ path: e.path, fileId: snap.fileId, size: snap.size, sha256: snap.sha256, keys });
      } finally {
        snap.dek.fill(0);
      }
    }
    return out;
  }

  async abandon(): Promise<boolean> {
    // Snapshots left behind are unreferenced ciphertext; the plaintext was never frozen.
    return false;
  }

  private async snapshot(
    projectId: string,
    absPath: string,
  ): Promise<{ fileId: string; size: number; sha256: string; dek: Buffer }> {
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
