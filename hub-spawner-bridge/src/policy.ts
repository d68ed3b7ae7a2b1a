/**
 * What the bridge asks the KMS before it spawns anything: which projects may this user start a
 * session in, may they start one in project P now, and until when. Two implementations: the
 * KMS over HTTP (kms-policy.ts) and a facts file evaluated with the KMS's own rule book
 * (file-policy.ts) for single-machine installations without a KMS.
 */

export interface PolicyRequest {
  user: string;
  /** The user's hub API token, when the KMS must be asked on the user's behalf. */
  token?: string;
}

export interface ProjectChoice {
  id: string;
  title: string;
  role: string | null;
  validFrom: string | null;
  validUntil: string | null;
  /** Whether a session may start now; when not, the reason code and a sentence for the user. */
  allowed: boolean;
  reason?: string;
  message?: string;
}

export type SpawnDecision =
  { allow: true; windowEnd: Date | null } | { allow: false; reason: string; message: string };

export interface PolicyClient {
  projects(req: PolicyRequest): Promise<ProjectChoice[]>;
  checkSpawn(req: PolicyRequest, project: string): Promise<SpawnDecision>;
  /** The user's passphrase-encrypted KEK file, or null when none is on record. */
  keyFile(req: PolicyRequest): Promise<unknown | null>;
}
