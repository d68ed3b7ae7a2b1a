/**
 * What trefs needs from the key management service, as a small interface: the mount runs
 * against the real KMS client (kms-key-service.ts) or an in-memory one (memory-key-service.ts).
 *
 * All key material crosses this boundary wrapped; the service never sees a DEK, the volume key
 * or a private key.
 */
import type { PublicKey, WrappedKey } from '@tre/crypto';
import type { EgressKms } from './egress-kms.js';

/** One epoch of a project's key pair, as released to one member. */
export interface ProjectKeyRecord {
  projectId: string;
  epoch: number;
  /** New DEKs are wrapped to the newest epoch's public key. */
  publicKey: PublicKey;
  /** The project private key wrapped to the member's KEK ({@link projectKeyContext}). */
  wrappedPrivateKey: WrappedKey;
}

export interface ProjectKeys {
  projectId: string;
  /** Every epoch the member may hold, oldest first. */
  epochs: ProjectKeyRecord[];
  /** The volume (file-name) key wrapped to one epoch's project key ({@link volumeKeyContext}). */
  wrappedVolumeKey: { epoch: number; wrapped: WrappedKey };
}

/** A file's DEK wrapped to the project key of `epoch` ({@link dekContext}). */
export interface WrappedDekRecord {
  /** The gocryptfs file ID of the file's header, lowercase hex (32 characters). */
  fileId: string;
  epoch: number;
  wrappedDek: WrappedKey;
}

export interface MembershipStatus {
  active: boolean;
  /** End of the access window; trefs enforces it locally even when the service is away. */
  validUntil?: Date;
  /** Why the membership is not active (shown in the log, never secret). */
  reason?: string;
}

export type AuditAction = 'open' | 'create' | 'rename' | 'unlink';

export interface AuditEvent {
  action: AuditAction;
  at: string;
  /** File ID (hex) of the file acted on; absent when its header could not be read. */
  fileId?: string;
  /** Path inside the cipher directory: reveals no plaintext name. */
  cipherPath: string;
  /** For rename: the new cipher path. */
  cipherTarget?: string;
  /** Calling process and its executable, when they could be determined. */
  pid?: number;
  exe?: string;
  /** open(2) access mode: 'r', 'w' or 'rw'. */
  mode?: string;
}

export interface KeyService {
  /** The project's keys for the calling member; throws NotMemberError/KmsUnreachableError. */
  fetchProjectKeys(): Promise<ProjectKeys>;
  /** Every wrapped DEK of the project, streamed (the mount loads them in one batch). */
  listWrappedDeks(): AsyncIterable<WrappedDekRecord>;
  /** One wrapped DEK, for files that appeared after the mount (e.g. a new upload). */
  fetchWrappedDek(fileId: string): Promise<WrappedDekRecord | undefined>;
  /** Registers new files' wrapped DEKs; must succeed before their headers are written. */
  registerFiles(records: WrappedDekRecord[]): Promise<void>;
  membershipStatus(): Promise<MembershipStatus>;
  auditBatch(events: AuditEvent[]): Promise<void>;
  /** Egress requests and grants (the KMS only; a local key service has none). */
  readonly egress?: EgressKms;
}

export function fileIdHex(fileId: Uint8Array): string {
  return Buffer.from(fileId.buffer, fileId.byteOffset, fileId.byteLength).toString('hex');
}
