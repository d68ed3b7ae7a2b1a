/**
 * Who may do what at the ingress. The service keeps its own workflow state but takes identity
 * and project roles from the KMS (which resolves JupyterHub tokens), so a person's rights are
 * decided in one place. The static authority serves isolated deployments and tests: a file of
 * token hashes, user names and project roles.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KmsClient, KmsClientError } from '@tre/kms-service/client';

export type ProjectRole = 'pi' | 'researcher' | 'data_owner' | 'reviewer';

export interface IngressAuthority {
  /** The user a hub token belongs to, or null if it is unknown. */
  identify(token: string): Promise<string | null>;
  /** The caller's role in a project, or null if they are not a member. */
  roleOf(token: string, username: string, project: string): Promise<ProjectRole | null>;
  /**
   * Confirmed files: their DEKs, registered as pending by the uploader, become releasable.
   * `missing` counts files the key service has no record of (master-key uploads, or none).
   */
  confirmFileKeys(project: string, fileIds: string[]): Promise<KeyOutcome>;
  /** Rejected files: their wrapped DEKs are destroyed. */
  destroyFileKeys(project: string, fileIds: string[]): Promise<KeyOutcome>;
  /** Mirrors the service's own audit entries into the central audit log, where there is one. */
  appendAudit?(events: ServiceAuditEntry[]): Promise<void>;
  /**
   * An egress request as the caller may see it (its requester, state and frozen manifest), or
   * null if it does not exist for them.
   */
  egress(token: string, project: string, requestId: number): Promise<EgressManifest | null>;
}

export interface KeyOutcome {
  /** Files whose key state changed (confirmed or destroyed). */
  done: number;
  /** Files the key service does not know. */
  missing: number;
  /** False when the authority keeps no keys at all (the static authority). */
  kept: boolean;
}

export interface ServiceAuditEntry {
  action: string;
  object: string;
  result: string;
  user: string;
}

export interface EgressManifest {
  requester: string;
  state: string;
  files: Array<{ fileId: string; path: string; size: number; sha256: string }>;
}

export class AuthorityUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthorityUnavailableError';
  }
}

/** A KMS failure the service cannot resolve by itself: the caller retries later. */
function kmsProblem(e: unknown): AuthorityUnavailableError {
  const k = e as { status?: number; code?: string; message?: string };
  return new AuthorityUnavailableError(
    `KMS refused or unavailable${k.status ? ` (${k.status} ${k.code ?? ''})` : ''}: ${k.message ?? String(e)}`,
  );
}

/**
 * Identity and roles from the KMS, asked with the caller's own token; key confirmation and
 * destruction and the audit mirror with the service's own hub service token (the KMS trusts
 * it when the service is listed in its `hub.services`).
 */
export class KmsAuthority implements IngressAuthority {
  private readonly service: KmsClient;

  constructor(
    private readonly baseUrl: string,
    serviceToken: string,
  ) {
    this.service = new KmsClient({ baseUrl, token: serviceToken });
  }

  private client(token: string): KmsClient {
    return new KmsClient({ baseUrl: this.baseUrl, token });
  }

  async identify(token: string): Promise<string | null> {
    try {
      return (await this.client(token).me()).username;
    } catch (e) {
      if (e instanceof KmsClientError && e.status === 401) return null;
      throw new AuthorityUnavailableError(`KMS unavailable: ${(e as Error).message}`);
    }
  }

  async roleOf(token: string, username: string, project: string): Promise<ProjectRole | null> {
    try {
      const p = await this.client(token).project(project);
      if (p.state !== 'active') return null;
      return p.members.find((m) => m.username === username)?.role ?? null;
    } catch (e) {
      if (e instanceof KmsClientError && (e.status === 403 || e.status === 404)) return null;
      throw new AuthorityUnavailableError(`KMS unavailable: ${(e as Error).message}`);
    }
  }

  /**
   * One batch call; if the KMS refuses the batch because it does not know a file (files
   * uploaded in master-key mode are never registered), file by file, counting the unknown.
   */
  private async perFile(
    fileIds: string[],
    batch: (ids: string[]) => Promise<number>,
    one: (id: string) => Promise<number>,
  ): Promise<KeyOutcome> {
    if (fileIds.length === 0) return { done: 0, missing: 0, kept: true };
    try {
      return { done: await batch(fileIds), missing: 0, kept: true };
    } catch (e) {
      if (!(e instanceof KmsClientError) || e.status !== 404) throw kmsProblem(e);
    }
    let done = 0;
    let missing = 0;
    for (const id of fileIds) {
      try {
        done += await one(id);
      } catch (e) {
        if (e instanceof KmsClientError && e.status === 404) missing++;
        else throw kmsProblem(e);
      }
    }
    return { done, missing, kept: true };
  }

  confirmFileKeys(project: string, fileIds: string[]): Promise<KeyOutcome> {
    return this.perFile(
      fileIds,
      async (ids) => (await this.service.confirmFiles(project, ids)).confirmed,
      async (id) => (await this.service.confirmFile(project, id)).confirmed,
    );
  }

  destroyFileKeys(project: string, fileIds: string[]): Promise<KeyOutcome> {
    return this.perFile(
      fileIds,
      async (ids) => (await this.service.destroyFiles(project, ids)).destroyed,
      async (id) => (await this.service.destroyFile(project, id)).destroyed,
    );
  }

  async appendAudit(events: ServiceAuditEntry[]): Promise<void> {
    try {
      await this.service.appendAuditEvents(events);
    } catch (e) {
      throw kmsProblem(e);
    }
  }

  async egress(token: string, project: string, requestId: number): Promise<EgressManifest | null> {
    try {
      const v = await this.client(token).egress(project, requestId);
      return {
        requester: v.requester,
        state: v.state,
        files: v.files.map((f) => ({
          fileId: f.fileId.toLowerCase(),
          path: f.path,
          size: f.size,
          sha256: f.sha256.toLowerCase(),
        })),
      };
    } catch (e) {
      if (e instanceof KmsClientError && (e.status === 403 || e.status === 404)) return null;
      throw new AuthorityUnavailableError(`KMS unavailable: ${(e as Error).message}`);
    }
  }
}

interface StaticUser {
  /** SHA-256 (hex) of the user's token: the file never holds a usable token. */
  tokenSha256: string;
  username: string;
  roles: Record<string, ProjectRole>;
}

export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export class StaticAuthority implements IngressAuthority {
  private readonly byHash = new Map<string, StaticUser>();

  constructor(users: StaticUser[]) {
    for (const u of users) this.byHash.set(u.tokenSha256, u);
  }

  static async fromFile(path: string): Promise<StaticAuthority> {
    const json = JSON.parse(await readFile(path, 'utf8')) as { users?: StaticUser[] };
    if (!Array.isArray(json.users)) throw new Error(`${path}: expected {"users": [...]}`);
    return new StaticAuthority(json.users);
  }

  async identify(token: string): Promise<string | null> {
    return this.byHash.get(tokenHash(token))?.username ?? null;
  }

  async roleOf(token: string, username: string, project: string): Promise<ProjectRole | null> {
    const u = this.byHash.get(tokenHash(token));
    if (!u || u.username !== username) return null;
    return Object.hasOwn(u.roles, project) ? (u.roles[project] ?? null) : null;
  }

  async confirmFileKeys(_project: string, fileIds: string[]): Promise<KeyOutcome> {
    return { done: 0, missing: fileIds.length, kept: false };
  }

  async destroyFileKeys(_project: string, fileIds: string[]): Promise<KeyOutcome> {
    return { done: 0, missing: fileIds.length, kept: false };
  }

  async egress(): Promise<EgressManifest | null> {
    throw new AuthorityUnavailableError('egress downloads need the KMS (serve with --kms)');
  }
}
