/**
 * A key service held in memory: a whole project (key pair, volume key, wrapped DEKs, membership,
 * audit log) in one object. It backs trefs's own tests and local trials; production mounts use
 * the KMS (kms-key-service.ts). It holds only wrapped keys, like the KMS.
 */
import { randomBytes } from 'node:crypto';
import {
  generateKeyPair,
  projectKeyContext,
  volumeKeyContext,
  wrapKey,
  type KeyPair,
  type PublicKey,
} from '@tre/crypto';
import { NotMemberError } from './errors.js';
import {
  type AuditEvent,
  type KeyService,
  type MembershipStatus,
  type ProjectKeys,
  type WrappedDekRecord,
} from './key-source.js';

export interface MemoryProject {
  keys: ProjectKeys;
  deks: Map<string, WrappedDekRecord>;
  membership: MembershipStatus;
  audit: AuditEvent[];
}

export class MemoryKeyService implements KeyService {
  /** Simulates an unreachable service when set. */
  offline = false;
  /** Counts calls, for tests that check batching. */
  readonly calls = { registerFiles: 0, auditBatch: 0, membershipStatus: 0 };

  constructor(readonly project: MemoryProject) {}

  /**
   * A new project whose key is released to `member`. Also returns the project key pair and
   * the volume key, which a real deployment never holds in one place (tests need them to
   * check the on-disk format with other tools).
   */
  static async createProject(
    projectId: string,
    member: PublicKey,
  ): Promise<{ service: MemoryKeyService; projectKey: KeyPair; volumeKey: Buffer }> {
    const projectKey = await generateKeyPair('x25519');
    const volumeKey = randomBytes(32);
    const keys: ProjectKeys = {
      projectId,
      epochs: [
        {
          projectId,
          epoch: 1,
          publicKey: { kem: projectKey.kem, kid: projectKey.kid, publicKey: projectKey.publicKey },
          wrappedPrivateKey: await wrapKey(
            projectKey.privateKey,
            member,
            projectKeyContext(projectId, 1),
          ),
        },
      ],
      wrappedVolumeKey: {
        epoch: 1,
        wrapped: await wrapKey(volumeKey, projectKey, volumeKeyContext(projectId)),
      },
    };
    const service = new MemoryKeyService({
      keys,
      deks: new Map(),
      membership: { active: true },
      audit: [],
    });
    return { service, projectKey, volumeKey };
  }

  private check(): void {
    if (this.offline) throw new Error('connect ECONNREFUSED (key service offline)');
  }

  async fetchProjectKeys(): Promise<ProjectKeys> {
    this.check();
    if (!this.project.membership.active) {
      throw new NotMemberError(
        `not a member of project ${this.project.keys.projectId}: ${this.project.membership.reason ?? 'membership ended'}`,
      );
    }
    return this.project.keys;
  }

  async *listWrappedDeks(): AsyncIterable<WrappedDekRecord> {
    this.check();
    for (const rec of [...this.project.deks.values()]) yield rec;
  }

  async fetchWrappedDek(fileId: string): Promise<WrappedDekRecord | undefined> {
    this.check();
    return this.project.deks.get(fileId);
  }

  async registerFiles(records: WrappedDekRecord[]): Promise<void> {
    this.check();
    this.calls.registerFiles += 1;
    for (const r of records) {
      if (this.project.deks.has(r.fileId)) throw new Error(`file ${r.fileId} already registered`);
    }
    for (const r of records) this.project.deks.set(r.fileId, r);
  }

  async membershipStatus(): Promise<MembershipStatus> {
    this.check();
    this.calls.membershipStatus += 1;
    return this.project.membership;
  }

  async auditBatch(events: AuditEvent[]): Promise<void> {
    this.check();
    this.calls.auditBatch += 1;
    this.project.audit.push(...events);
  }

  /** Ends the membership, as the KMS does when a window closes or a PI removes a member. */
  revoke(reason = 'removed from the project'): void {
    this.project.membership = { active: false, reason };
  }
}
