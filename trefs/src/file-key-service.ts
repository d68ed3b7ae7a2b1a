/**
 * A key service kept in files (`--kms file:<path>`), for single-machine trials and for tests
 * that run the daemon as its own process: `<path>` holds the project's wrapped keys and the
 * membership (JSON), `<path>.deks.jsonl` and `<path>.audit.jsonl` are appended to. Like the
 * KMS, the files hold only wrapped keys. The membership is re-read when `<path>` changes, so
 * editing it revokes access.
 */
export const DEKS_SUFFIX = '.deks.jsonl';
export const AUDIT_SUFFIX = '.audit.jsonl';
import { readFileSync, statSync } from 'node:fs';
import { appendFile, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { tempSibling, toBase64url } from '@tre/crypto';
import type { MembershipStatus, ProjectKeys, WrappedDekRecord } from './key-source.js';
import { MemoryKeyService, type MemoryProject } from './memory-key-service.js';

interface StoredState {
  keys: Omit<ProjectKeys, 'epochs'> & {
    epochs: Array<Omit<ProjectKeys['epochs'][number], 'publicKey'> & { publicKey: StoredPk }>;
  };
  membership: { active: boolean; validUntil?: string; reason?: string };
}

interface StoredPk {
  kem: 'x25519' | 'x-wing';
  kid: string;
  publicKey: string;
}

function toStored(p: MemoryProject): StoredState {
  return {
    keys: {
      ...p.keys,
      epochs: p.keys.epochs.map((e) => ({
        ...e,
        publicKey: {
          ...e.publicKey,
          publicKey: toBase64url(e.publicKey.publicKey),
        },
      })),
    },
    membership: {
      active: p.membership.active,
      ...(p.membership.validUntil ? { validUntil: p.membership.validUntil.toISOString() } : {}),
      ...(p.membership.reason ? { reason: p.membership.reason } : {}),
    },
  };
}

function membershipOf(s: StoredState['membership']): MembershipStatus {
  return {
    active: s.active,
    ...(s.validUntil ? { validUntil: new Date(s.validUntil) } : {}),
    ...(s.reason ? { reason: s.reason } : {}),
  };
}

function fromStored(s: StoredState): MemoryProject {
  return {
    keys: {
      ...s.keys,
      epochs: s.keys.epochs.map((e) => ({
        ...e,
        publicKey: {
          ...e.publicKey,
          publicKey: new Uint8Array(Buffer.from(e.publicKey.publicKey, 'base64url')),
        },
      })),
    },
    deks: new Map(),
    membership: membershipOf(s.membership),
    audit: [],
  };
}

export class FileKeyService extends MemoryKeyService {
  private mtimeMs: number;

  constructor(readonly path: string) {
    const stored = JSON.parse(readFileSync(path, 'utf8')) as StoredState;
    const project = fromStored(stored);
    for (const line of readLines(`${path}${DEKS_SUFFIX}`)) {
      const rec = JSON.parse(line) as WrappedDekRecord;
      project.deks.set(rec.fileId, rec);
    }
    super(project);
    this.mtimeMs = statSync(path).mtimeMs;
  }

  /** Writes a project's keys and membership to `path` (DEKs and audit go to side files). */
  static async save(path: string, project: MemoryProject): Promise<void> {
    const tmp = tempSibling(path);
    await writeFile(tmp, JSON.stringify(toStored(project)), { mode: 0o600 });
    await rename(tmp, path);
    await appendFile(
      `${path}${DEKS_SUFFIX}`,
      [...project.deks.values()].map((d) => JSON.stringify(d) + '\n').join(''),
      { mode: 0o600 },
    );
  }

  override async registerFiles(records: WrappedDekRecord[]): Promise<void> {
    await super.registerFiles(records);
    await appendFile(
      `${this.path}${DEKS_SUFFIX}`,
      records.map((r) => JSON.stringify(r) + '\n').join(''),
      { mode: 0o600 },
    );
  }

  override async auditBatch(events: MemoryProject['audit']): Promise<void> {
    await super.auditBatch(events);
    await appendFile(
      `${this.path}${AUDIT_SUFFIX}`,
      events.map((e) => JSON.stringify(e) + '\n').join(''),
      { mode: 0o600 },
    );
  }

  /** Re-reads the membership when the file changed, so editing it revokes access. */
  override async membershipStatus(): Promise<MembershipStatus> {
    const st = await stat(this.path);
    if (st.mtimeMs !== this.mtimeMs) {
      this.mtimeMs = st.mtimeMs;
      const stored = JSON.parse(await readFile(this.path, 'utf8')) as StoredState;
      this.project.membership = membershipOf(stored.membership);
    }
    return super.membershipStatus();
  }
}

function readLines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l.length > 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
