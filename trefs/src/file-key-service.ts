/**
 * A key service kept in one JSON file (`--kms file:<path>`): the in-memory service with its
 * state loaded at start and saved (atomically) after every change. For single-machine trials
 * and for tests that run the daemon as a separate process. Like the KMS, the file holds only
 * wrapped keys. The membership is re-read from the file on every poll, so editing the file
 * revokes access.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import type { MembershipStatus, ProjectKeys, WrappedDekRecord } from './key-source.js';
import { MemoryKeyService, type MemoryProject } from './memory-key-service.js';

interface StoredState {
  keys: Omit<ProjectKeys, 'epochs'> & {
    epochs: Array<Omit<ProjectKeys['epochs'][number], 'publicKey'> & { publicKey: StoredPk }>;
  };
  deks: WrappedDekRecord[];
  membership: { active: boolean; validUntil?: string; reason?: string };
  audit: MemoryProject['audit'];
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
          publicKey: Buffer.from(e.publicKey.publicKey).toString('base64url'),
        },
      })),
    },
    deks: [...p.deks.values()],
    membership: {
      active: p.membership.active,
      ...(p.membership.validUntil ? { validUntil: p.membership.validUntil.toISOString() } : {}),
      ...(p.membership.reason ? { reason: p.membership.reason } : {}),
    },
    audit: p.audit,
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
    deks: new Map(s.deks.map((d) => [d.fileId, d])),
    membership: membershipOf(s.membership),
    audit: s.audit,
  };
}

export class FileKeyService extends MemoryKeyService {
  private saving: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    project?: MemoryProject,
  ) {
    super(project ?? fromStored(JSON.parse(readFileSync(path, 'utf8')) as StoredState));
  }

  /** Writes the state of `service` to `path`. */
  static async save(path: string, project: MemoryProject): Promise<void> {
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(toStored(project)), { mode: 0o600 });
    await rename(tmp, path);
  }

  private persist(): Promise<void> {
    this.saving = this.saving.then(() => FileKeyService.save(this.path, this.project));
    return this.saving;
  }

  override async registerFiles(records: WrappedDekRecord[]): Promise<void> {
    await super.registerFiles(records);
    await this.persist();
  }

  override async auditBatch(events: MemoryProject['audit']): Promise<void> {
    await super.auditBatch(events);
    await this.persist();
  }

  override async membershipStatus(): Promise<MembershipStatus> {
    const stored = JSON.parse(readFileSync(this.path, 'utf8')) as StoredState;
    this.project.membership = membershipOf(stored.membership);
    return super.membershipStatus();
  }
}
