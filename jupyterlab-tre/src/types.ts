/** What the sidebar reads from the KMS (through the server extension) and from the server. */

// The disclosure-check record is kms-service's own type. Type-only imports: nothing of the
// checker (or the server around it) reaches the lab's bundle (test/bundle.test.ts checks).
import type { FileCheck } from '@tre/kms-service/sdc';

export type { CellResult, FileCheck, RuleHit, Verdict } from '@tre/kms-service/sdc';

export interface ServerConfig {
  project: string;
  mode: 'hub' | 'demo';
  kms: boolean;
  desktopUrl: string;
  exportPath: string | null;
}

export interface Decision {
  allowed: boolean;
  reason?: string;
  message?: string;
}

export interface Grant {
  id: number;
  username: string;
  role: string | null;
  epoch: number;
  kek: { kid: string } | null;
}

export interface MyProject {
  id: string;
  title: string;
  pi: string;
  role: string;
  state: string;
  consent: {
    complete: boolean;
    dataOwners: Array<{ username: string; consentedAt: string | null }>;
  };
  window: { validFrom: string | null; validUntil: string | null; open: boolean };
  epoch: number;
  keyWrapped: boolean;
  keyRelease: Decision;
  awaitingGrant: { id: number; epoch: number } | null;
  grantsToComplete: Grant[];
}

export interface Me {
  username: string;
  kek: { kid: string; kem: string } | null;
}

export interface Vault {
  threshold: number;
  shares: Array<{ trustee: string }>;
}

export interface KeyStatus {
  keyAgent: boolean;
  unlocked: boolean;
  files: number;
  readable: number;
}

export interface ExportFile {
  path: string;
  size: number;
  sdc: FileCheck;
}

export interface EgressFile {
  fileId: string;
  path: string;
  size: number;
  sdc: FileCheck;
  votes: Array<{ reviewer: string; role: string; vote: 'approve' | 'request_changes' }>;
  justifications: Array<{ cell: string; rule: string; text: string; author: string }>;
}

export interface EgressSummary {
  id: number;
  projectId?: string;
  requester: string;
  title: string;
  state: string;
  round: number;
  updatedAt: string;
}

export interface EgressRequest extends EgressSummary {
  projectId: string;
  reviewers: Array<{ username: string; role: string; done: boolean }>;
  files: EgressFile[];
  comments: Array<{
    id: number;
    author: string;
    text: string;
    visibility: string;
    fileId: string | null;
  }>;
}

/** A filed file opened by a reviewer (`tre/api/egress/review`). */
export interface OpenedFile {
  path: string;
  size: number;
  verified: true;
  text?: string;
}
