/**
 * The key service backed by the KMS (`--kms https://…`), through its typed client. The member's
 * hub API token arrives with the KEK on the key descriptor, never in argv or the environment.
 *
 * Membership is read from the project view (the member's window and the project state); a 401,
 * 403 or 404 there means the membership is gone. Audit batches go to the KMS's fs-events
 * endpoint, one audit entry per event, under the cipher path (the KMS never sees a name).
 * The client comes from the package's `client` subpath, which loads neither the server's
 * express nor its SQLite binding into the daemon.
 */
import { KmsClient, KmsClientError, type FsEventInput } from '@tre/kms-service/client';
import type { Logger } from 'pino';
import { decodePublicKey } from '@tre/crypto';
import { KmsEgress } from './egress-kms.js';
import { KmsUnreachableError, NotMemberError, WrongKeyError } from './errors.js';
import type {
  AuditEvent,
  KeyService,
  MembershipStatus,
  ProjectKeyRecord,
  ProjectKeys,
  WrappedDekRecord,
} from './key-source.js';

/** SHA-256 of no bytes: a file trefs creates is registered before it has content. */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function translate(err: unknown, what: string): Error {
  if (err instanceof KmsClientError) {
    if (err.status === 401 || err.status === 403) {
      return new NotMemberError(`${what}: ${err.message}${err.reason ? ` (${err.reason})` : ''}`);
    }
    if (err.status === 404) return new NotMemberError(`${what}: ${err.message}`);
    return new KmsUnreachableError(`${what}: KMS answered ${err.status} ${err.message}`);
  }
  return new KmsUnreachableError(`${what}: ${(err as Error).message}`);
}

/** The KMS's event shape: pid 0 and an empty exe when the caller could not be determined. */
function toFsEvent(e: AuditEvent): FsEventInput {
  return {
    op: e.action,
    path: e.cipherPath,
    ...(e.cipherTarget !== undefined ? { to: e.cipherTarget } : {}),
    pid: e.pid ?? 0,
    exe: e.exe ?? '',
    time: e.at,
  };
}

export class KmsKeyService implements KeyService {
  private readonly client: KmsClient;
  private username: string | undefined;
  /** The key agent's egress and grant operations, as the same member. */
  readonly egress: KmsEgress;

  constructor(
    baseUrl: string,
    token: string,
    private readonly projectId: string,
    private readonly log: Logger,
    /** Names the session in the audit log (e.g. the Slurm job id). */
    private readonly session?: string,
  ) {
    this.client = new KmsClient({ baseUrl, token });
    this.egress = new KmsEgress(this.client);
  }

  async fetchProjectKeys(): Promise<ProjectKeys> {
    let current;
    try {
      current = await this.client.projectKey(this.projectId);
    } catch (err) {
      throw translate(err, `project ${this.projectId} key`);
    }
    if (current.wrapped === null || current.volumeKey === null) {
      throw new WrongKeyError(
        `the KMS has no project key for you in ${this.projectId} yet (grant pending)`,
      );
    }
    const epochs: ProjectKeyRecord[] = [];
    for (let e = 1; e < current.epoch; e++) {
      try {
        const older = await this.client.projectKey(this.projectId, e);
        if (older.wrapped) epochs.push(this.record(older));
      } catch {
        // An epoch released to others only: files under it stay unreadable for this member.
      }
    }
    epochs.push(this.record(current));
    return {
      projectId: this.projectId,
      epochs,
      wrappedVolumeKey: { epoch: current.epoch, wrapped: current.volumeKey },
    };
  }

  private record(r: Awaited<ReturnType<KmsClient['projectKey']>>): ProjectKeyRecord {
    return {
      projectId: r.projectId,
      epoch: r.epoch,
      publicKey: decodePublicKey(r.publicKey),
      wrappedPrivateKey: r.wrapped!,
    };
  }

  async *listWrappedDeks(): AsyncIterable<WrappedDekRecord> {
    try {
      for await (const f of this.client.fileKeys(this.projectId)) {
        yield { fileId: f.fileId, epoch: f.epoch, wrappedDek: f.wrapped };
      }
    } catch (err) {
      throw translate(err, 'file keys');
    }
  }

  async fetchWrappedDek(fileId: string): Promise<WrappedDekRecord | undefined> {
    try {
      const f = await this.client.fileKey(this.projectId, fileId);
      return { fileId: f.fileId, epoch: f.epoch, wrappedDek: f.wrapped };
    } catch (err) {
      if (err instanceof KmsClientError && err.status === 404) return undefined;
      throw translate(err, `file key ${fileId}`);
    }
  }

  async registerFiles(records: WrappedDekRecord[]): Promise<void> {
    try {
      await this.client.registerFiles(
        this.projectId,
        records.map((r) => ({
          fileId: r.fileId,
          size: 0,
          sha256: EMPTY_SHA256,
          epoch: r.epoch,
          wrapped: r.wrappedDek,
        })),
      );
    } catch (err) {
      throw translate(err, 'file registration');
    }
  }

  async membershipStatus(): Promise<MembershipStatus> {
    try {
      this.username ??= (await this.client.me()).username;
      const p = await this.client.project(this.projectId);
      if (p.state === 'closed') return { active: false, reason: 'the project is closed' };
      const m = p.members.find((x) => x.username === this.username);
      if (!m) return { active: false, reason: 'no longer a member' };
      if (m.validFrom && Date.parse(m.validFrom) > Date.now()) {
        return { active: false, reason: `access starts at ${m.validFrom}` };
      }
      return { active: true, ...(m.validUntil ? { validUntil: new Date(m.validUntil) } : {}) };
    } catch (err) {
      if (err instanceof KmsClientError && [401, 403, 404].includes(err.status)) {
        return { active: false, reason: err.message };
      }
      throw translate(err, 'membership');
    }
  }

  /** The KMS takes at most this many events per call. */
  static readonly AUDIT_BATCH = 1000;

  async auditBatch(events: AuditEvent[]): Promise<void> {
    for (let i = 0; i < events.length; i += KmsKeyService.AUDIT_BATCH) {
      const batch = events.slice(i, i + KmsKeyService.AUDIT_BATCH).map(toFsEvent);
      try {
        await this.client.appendFsEvents(this.projectId, batch, this.session);
      } catch (err) {
        throw translate(err, 'audit batch');
      }
    }
    this.log.debug({ events: events.length }, 'audit batch sent');
  }
}
