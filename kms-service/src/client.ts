/**
 * Typed client for the KMS, used by the uploader, trefs and the spawner bridge. Fetch-based;
 * every non-2xx answer becomes a {@link KmsClientError} carrying the server's code and reason.
 */
import type { KeyFile, WrappedKey } from '@tre/crypto';
import type { EgressState, Role, TrainingKind } from './policy.js';
import type { FileCheck } from './sdc/check.js';

export {
  authPublicKeyText,
  recoveryAuthKid,
  recoveryRequestMessage,
  signRecoveryRequest,
  verifyRecoveryRequest,
  type RecoveryRequestFields,
} from './recovery.js';

export interface KmsClientOptions {
  baseUrl: string;
  /** A JupyterHub API token of the user on whose behalf the client acts. */
  token: string;
  fetch?: typeof fetch;
}

export class KmsClientError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'KmsClientError';
  }
}

export interface KekView {
  kid: string;
  kem: string;
  publicKey: string;
}

export interface MeView {
  username: string;
  admin: boolean;
  registered: boolean;
  organisation: string | null;
  email: string | null;
  trustee: boolean;
  agreement: { accepted: string | null; current: string };
  trainings: Array<{ kind: TrainingKind; completedAt: string; expiresAt: string }>;
  kek: KekView | null;
}

export interface MemberView {
  username: string;
  role: Role;
  validFrom: string | null;
  validUntil: string | null;
  consentedAt: string | null;
}

export interface ProjectView {
  id: string;
  title: string;
  description: string;
  pi: string;
  state: 'proposed' | 'active' | 'closed';
  createdAt: string;
  closedAt: string | null;
  epoch: number;
  rotationDue: boolean;
  publicKey: { epoch: number; kid: string; kem: string; publicKey: string } | null;
  members: MemberView[];
}

export interface ProjectKeyRelease {
  projectId: string;
  epoch: number;
  kem: string;
  kid: string;
  publicKey: string;
  wrapped: WrappedKey | null;
  volumeKey: WrappedKey | null;
  previous: WrappedKey | null;
}

export interface GrantView {
  id: number;
  username: string;
  role: Role | null;
  epoch: number;
  createdAt: string;
  kek: KekView | null;
}

export interface FileRegistration {
  fileId: string;
  size: number;
  sha256: string;
  epoch: number;
  wrapped: WrappedKey;
}

export interface FileKeyRelease {
  fileId: string;
  epoch: number;
  size: number;
  sha256: string;
  wrapped: WrappedKey;
}

export interface EgressFileView {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  sdc: FileCheck;
  keyHolders: string[];
  votes: Array<{ reviewer: string; role: Role; vote: 'approve' | 'request_changes'; at: string }>;
  justifications: Array<{ cell: string; rule: string; text: string; author: string }>;
}

export interface EgressView {
  id: number;
  projectId: string;
  requester: string;
  title: string;
  state: EgressState;
  round: number;
  createdAt: string;
  updatedAt: string;
  reviewers: Array<{ username: string; role: Role; done: boolean }>;
  files: EgressFileView[];
  comments: Array<{
    id: number;
    round: number;
    fileId: string | null;
    author: string;
    visibility: 'reviewers' | 'requester';
    text: string;
    createdAt: string;
  }>;
}

export interface EgressFiling {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  sdc: FileCheck;
  /** The file's DEK wrapped to the requester and to every reviewer. */
  keys: Array<{ username: string; wrapped: WrappedKey }>;
}

export interface EgressFileKey {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  wrapped: WrappedKey;
}

/** One of my projects, as `GET /v1/me/projects` describes it. */
export interface MyProjectView {
  id: string;
  title: string;
  pi: string;
  role: Role;
  /** Every role I hold in the project (today exactly one). */
  roles: Role[];
  state: 'proposed' | 'active' | 'closed';
  consent: {
    complete: boolean;
    dataOwners: Array<{ username: string; consentedAt: string | null }>;
  };
  /** My access window; `open` says whether now lies inside it. */
  window: { validFrom: string | null; validUntil: string | null; open: boolean };
  epoch: number;
  rotationDue: boolean;
  /** A project key of the current epoch is wrapped to my current KEK. */
  keyWrapped: boolean;
  /** What the policy would answer to a project-key release now, with the failed condition. */
  keyRelease: { allowed: boolean; reason: string | null };
  /** My own grant waiting for a key holder, if any. */
  awaitingGrant: { id: number; epoch: number } | null;
  /** Pending grants of others that I can complete (I hold the key and the policy allows it). */
  grantsToComplete: GrantView[];
}

/** An egress request waiting for me as a reviewer (`GET /v1/me/reviews`). */
export interface MyReviewView {
  projectId: string;
  projectTitle: string;
  id: number;
  title: string;
  requester: string;
  state: EgressState;
  round: number;
  updatedAt: string;
  files: number;
  /** vote: I have not voted on every file of this round; decide: approve, return or reject. */
  todo: 'vote' | 'decide';
}

export interface FsEventInput {
  op: 'open' | 'create' | 'rename' | 'unlink';
  path: string;
  to?: string;
  pid: number;
  exe: string;
  time: string;
}

export interface ServiceAuditEvent {
  /** Namespaced, e.g. `ingress.confirm`. */
  action: string;
  object: string;
  result?: string;
  /** The person on whose behalf the service acted. */
  user?: string;
}

export interface RecoveryView {
  id: number;
  /** waiting: inside the waiting period, trustees do not see it yet. */
  state: 'waiting' | 'open' | 'ready' | 'cancelled';
  notBefore: string | null;
  threshold: number;
  approvals: number;
  shares: Array<{ trustee: string; wrapped: WrappedKey }>;
}

export interface TrusteeRecoveryView {
  id: number;
  username: string;
  recoveryPublicKey: string;
  createdAt: string;
  share: WrappedKey;
  vaultKid: string;
  /** Check the request with verifyRecoveryRequest before re-encrypting the share. */
  recoveryAuthKey: string;
  requestedAt: string;
  signature: string;
}

export interface RecoveryListEntry {
  id: number;
  state: RecoveryView['state'];
  createdAt: string;
  notBefore: string | null;
  cancelledBy: string | null;
}

export interface VaultView {
  kid: string;
  threshold: number;
  shares: number;
  trustees: string[];
  createdAt: string;
  recoveryAuthKid: string | null;
}

const enc = encodeURIComponent;

export class KmsClient {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: KmsClientOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.fetchFn = opts.fetch ?? fetch;
  }

  private async raw(method: string, path: string, body?: unknown): Promise<Response> {
    const res = await this.fetchFn(this.base + path, {
      method,
      headers: {
        Authorization: `token ${this.opts.token}`,
        Accept: 'application/json',
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    if (!res.ok) {
      let err: { code?: string; message?: string; reason?: string } = {};
      try {
        err = ((await res.json()) as { error?: typeof err }).error ?? {};
      } catch {
        // not JSON: the status alone has to do
      }
      throw new KmsClientError(
        res.status,
        err.code ?? 'http_error',
        err.message ?? `HTTP ${res.status}`,
        err.reason,
      );
    }
    return res;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return (await (await this.raw(method, path, body)).json()) as T;
  }

  me(): Promise<MeView> {
    return this.call('GET', '/v1/me');
  }
  myProjects(): Promise<MyProjectView[]> {
    return this.call('GET', '/v1/me/projects');
  }
  myReviews(): Promise<MyReviewView[]> {
    return this.call('GET', '/v1/me/reviews');
  }
  register(organisation: string, email?: string): Promise<MeView> {
    return this.call('PUT', '/v1/me', { organisation, ...(email ? { email } : {}) });
  }
  acceptAgreement(version: string): Promise<MeView> {
    return this.call('POST', '/v1/me/agreement', { version });
  }
  addKek(publicKey: string): Promise<KekView> {
    return this.call('POST', '/v1/me/keys', { publicKey });
  }
  listKeks(username: string): Promise<Array<KekView & { createdAt: string; current: boolean }>> {
    return this.call('GET', `/v1/people/${enc(username)}/keys`);
  }
  putKeyFile(file: KeyFile): Promise<{ kid: string }> {
    return this.call('PUT', '/v1/me/keyfile', file);
  }
  getKeyFile(): Promise<KeyFile> {
    return this.call('GET', '/v1/me/keyfile');
  }
  notify(
    kind: 'security_issue' | 'anomaly' | 'too_many_rights' | 'change_of_institute',
    message: string,
  ): Promise<{ id: number }> {
    return this.call('POST', '/v1/me/notifications', { kind, message });
  }

  recordTraining(username: string, kind: TrainingKind, completedAt: string, expiresAt: string) {
    return this.call<{ kind: TrainingKind; completedAt: string; expiresAt: string }>(
      'PUT',
      `/v1/admin/people/${enc(username)}/trainings/${kind}`,
      { completedAt, expiresAt },
    );
  }
  setTrustee(username: string, trustee: boolean): Promise<{ username: string; trustee: boolean }> {
    return this.call('PUT', `/v1/admin/people/${enc(username)}/trustee`, { trustee });
  }
  listNotifications(
    after = 0,
    limit = 100,
  ): Promise<
    Array<{ id: number; username: string; kind: string; message: string; createdAt: string }>
  > {
    return this.call('GET', `/v1/admin/notifications?after=${after}&limit=${limit}`);
  }
  async exportAudit(): Promise<string> {
    return (await this.raw('GET', '/v1/audit/export')).text();
  }
  async auditPublicKey(): Promise<string> {
    return (await this.raw('GET', '/v1/audit/public-key')).text();
  }

  proposeProject(p: {
    id: string;
    title: string;
    description?: string;
    validUntil?: string;
  }): Promise<ProjectView> {
    return this.call('POST', '/v1/projects', p);
  }
  project(id: string): Promise<ProjectView> {
    return this.call('GET', `/v1/projects/${enc(id)}`);
  }
  consent(id: string): Promise<ProjectView> {
    return this.call('POST', `/v1/projects/${enc(id)}/consent`);
  }
  closeProject(id: string): Promise<ProjectView & { shredded: number }> {
    return this.call('POST', `/v1/projects/${enc(id)}/close`);
  }
  addMember(
    id: string,
    m: { username: string; role: Role; validFrom?: string; validUntil?: string },
  ) {
    return this.call<{
      username: string;
      role: Role;
      validFrom: string | null;
      validUntil: string | null;
      grantId: number | null;
    }>('POST', `/v1/projects/${enc(id)}/members`, m);
  }
  removeMember(id: string, username: string): Promise<{ rotationDue: boolean }> {
    return this.call('DELETE', `/v1/projects/${enc(id)}/members/${enc(username)}`);
  }
  publishEpoch(
    id: string,
    e: {
      epoch: number;
      publicKey: string;
      volumeKey?: WrappedKey;
      previous?: WrappedKey;
      wraps: Array<{ username: string; wrapped: WrappedKey }>;
    },
  ): Promise<ProjectView> {
    return this.call('POST', `/v1/projects/${enc(id)}/epochs`, e);
  }
  projectKey(id: string, epoch?: number): Promise<ProjectKeyRelease> {
    return this.call(
      'GET',
      `/v1/projects/${enc(id)}/key${epoch !== undefined ? `?epoch=${epoch}` : ''}`,
    );
  }
  grants(id: string): Promise<GrantView[]> {
    return this.call('GET', `/v1/projects/${enc(id)}/grants`);
  }
  completeGrant(
    id: string,
    grantId: number,
    wrapped: WrappedKey,
  ): Promise<{ id: number; state: 'completed' }> {
    return this.call('POST', `/v1/projects/${enc(id)}/grants/${grantId}`, { wrapped });
  }
  /** `state: 'pending'` (ingress): no key is released until a trusted service confirms. */
  registerFiles(
    id: string,
    files: FileRegistration[],
    opts: { state?: 'pending' | 'visible' } = {},
  ): Promise<{ registered: number; state: 'pending' | 'visible' }> {
    return this.call('POST', `/v1/projects/${enc(id)}/files`, {
      files,
      ...(opts.state ? { state: opts.state } : {}),
    });
  }
  /** Trusted service or hub admin: the staged files are confirmed; their keys become releasable. */
  confirmFiles(
    id: string,
    fileIds: string[],
  ): Promise<{ confirmed: number; alreadyVisible: number }> {
    return this.call('POST', `/v1/projects/${enc(id)}/files/confirm`, { fileIds });
  }
  confirmFile(id: string, fileId: string): Promise<{ confirmed: number; alreadyVisible: number }> {
    return this.call('POST', `/v1/projects/${enc(id)}/files/${enc(fileId)}/confirm`);
  }
  /** Trusted service (pending files only) or hub admin: shreds the files' wrapped DEKs. */
  destroyFiles(
    id: string,
    fileIds: string[],
  ): Promise<{ destroyed: number; alreadyDestroyed: number; shredded: number }> {
    return this.call('POST', `/v1/projects/${enc(id)}/files/destroy`, { fileIds });
  }
  destroyFile(
    id: string,
    fileId: string,
  ): Promise<{ destroyed: number; alreadyDestroyed: number; shredded: number }> {
    return this.call('DELETE', `/v1/projects/${enc(id)}/files/${enc(fileId)}`);
  }
  /** A batch (at most 1,000) of a session's filesystem events, for the audit log. */
  appendFsEvents(
    id: string,
    events: FsEventInput[],
    session?: string,
  ): Promise<{ appended: number; seq: number }> {
    return this.call('POST', `/v1/projects/${enc(id)}/audit/fs-events`, {
      events,
      ...(session ? { session } : {}),
    });
  }
  /** Trusted service or hub admin: its own audit events (at most 1,000 a call). */
  appendAuditEvents(events: ServiceAuditEvent[]): Promise<{ appended: number; seq: number }> {
    return this.call('POST', '/v1/audit/events', { events });
  }
  fileKey(id: string, fileId: string): Promise<FileKeyRelease> {
    return this.call('GET', `/v1/projects/${enc(id)}/files/${enc(fileId)}/key`);
  }
  /** Every wrapped DEK of the project, streamed; memory stays flat for any project size. */
  async *fileKeys(
    id: string,
  ): AsyncGenerator<{ fileId: string; epoch: number; wrapped: WrappedKey }> {
    const res = await this.raw('GET', `/v1/projects/${enc(id)}/files/keys`);
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line) yield JSON.parse(line) as { fileId: string; epoch: number; wrapped: WrappedKey };
      }
    }
    if (buf.trim()) yield JSON.parse(buf) as { fileId: string; epoch: number; wrapped: WrappedKey };
  }
  addRecipient(
    id: string,
    fileId: string,
    username: string,
    wrapped: WrappedKey,
  ): Promise<{ fileId: string; username: string }> {
    return this.call('POST', `/v1/projects/${enc(id)}/files/${enc(fileId)}/recipients`, {
      username,
      purpose: 'review',
      wrapped,
    });
  }
  reviewKey(
    id: string,
    fileId: string,
  ): Promise<{ fileId: string; purpose: string; wrapped: WrappedKey }> {
    return this.call('GET', `/v1/projects/${enc(id)}/files/${enc(fileId)}/review-key`);
  }

  /** `recoveryAuthKey`: see recovery.ts (wrap each share under @tre/crypto's vaultShareContext). */
  putVault(
    threshold: number,
    shares: Array<{ trustee: string; wrapped: WrappedKey }>,
    recoveryAuthKey: string,
  ): Promise<VaultView> {
    return this.call('PUT', '/v1/me/vault', { threshold, shares, recoveryAuthKey });
  }
  vault(): Promise<VaultView> {
    return this.call('GET', '/v1/me/vault');
  }
  /** Signed with the vault's recovery-authentication key (signRecoveryRequest). */
  requestRecovery(body: {
    recoveryPublicKey: string;
    requestedAt: string;
    signature: string;
  }): Promise<RecoveryView> {
    return this.call('POST', '/v1/me/recoveries', body);
  }
  recoveries(): Promise<RecoveryListEntry[]> {
    return this.call('GET', '/v1/me/recoveries');
  }
  cancelRecovery(id: number): Promise<{ id: number; state: 'cancelled'; cancelledBy: string }> {
    return this.call('POST', `/v1/admin/recoveries/${id}/cancel`);
  }
  recovery(id: number): Promise<RecoveryView> {
    return this.call('GET', `/v1/me/recoveries/${id}`);
  }
  trusteeRecoveries(): Promise<TrusteeRecoveryView[]> {
    return this.call('GET', '/v1/trustee/recoveries');
  }
  approveRecovery(
    id: number,
    wrapped: WrappedKey,
  ): Promise<{ id: number; approvals: number; threshold: number }> {
    return this.call('POST', `/v1/trustee/recoveries/${id}/approve`, { wrapped });
  }

  // ---- egress -------------------------------------------------------------------------------

  createEgress(id: string, title: string): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress`, { title });
  }
  listEgress(id: string): Promise<
    Array<
      Pick<EgressView, 'id' | 'requester' | 'title' | 'state' | 'round' | 'updatedAt'> & {
        mine: boolean;
      }
    >
  > {
    return this.call('GET', `/v1/projects/${enc(id)}/egress`);
  }
  egress(id: string, requestId: number): Promise<EgressView> {
    return this.call('GET', `/v1/projects/${enc(id)}/egress/${requestId}`);
  }
  putEgressFiles(id: string, requestId: number, files: EgressFiling[]): Promise<EgressView> {
    return this.call('PUT', `/v1/projects/${enc(id)}/egress/${requestId}/files`, { files });
  }
  justifyEgress(
    id: string,
    requestId: number,
    j: { fileId: string; cell?: string; rule: string; text: string },
  ): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/justifications`, j);
  }
  submitEgress(id: string, requestId: number): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/submit`);
  }
  withdrawEgress(id: string, requestId: number): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/withdraw`);
  }
  egressReviewKey(id: string, requestId: number, fileId: string): Promise<EgressFileKey> {
    return this.call(
      'GET',
      `/v1/projects/${enc(id)}/egress/${requestId}/files/${enc(fileId)}/review-key`,
    );
  }
  voteEgress(
    id: string,
    requestId: number,
    fileId: string,
    vote: 'approve' | 'request_changes',
  ): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/votes`, {
      fileId,
      vote,
    });
  }
  commentEgress(
    id: string,
    requestId: number,
    c: { text: string; fileId?: string; visibility?: 'reviewers' | 'requester' },
  ): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/comments`, c);
  }
  decideEgress(
    id: string,
    requestId: number,
    decision: 'approve' | 'reject' | 'return',
  ): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/decision`, {
      decision,
    });
  }
  /** The requester's wrapped DEKs and the frozen manifest; `tre download` verifies against it. */
  releaseEgress(
    id: string,
    requestId: number,
  ): Promise<{ id: number; projectId: string; state: 'released'; files: EgressFileKey[] }> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/release`);
  }
  revokeEgress(id: string, requestId: number): Promise<EgressView> {
    return this.call('POST', `/v1/projects/${enc(id)}/egress/${requestId}/revoke`);
  }
}
