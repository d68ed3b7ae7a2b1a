/**
 * Who may do what at the ingress. The service keeps its own workflow state but takes identity
 * and project roles from the KMS (which resolves JupyterHub tokens), so a person's rights are
 * decided in one place. The static authority serves isolated deployments and tests: a file of
 * token hashes, user names and project roles.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KmsClient, KmsClientError } from '@tre/kms-service';

export type ProjectRole = 'pi' | 'researcher' | 'data_owner' | 'reviewer';

export interface IngressAuthority {
  /** The user a hub token belongs to, or null if it is unknown. */
  identify(token: string): Promise<string | null>;
  /** The caller's role in a project, or null if they are not a member. */
  roleOf(token: string, username: string, project: string): Promise<ProjectRole | null>;
  /**
   * Destroys the wrapped DEKs of rejected files. Returns false where the backing service has
   * no such operation (then nothing was registered for them in the first place or it must be
   * shredded by the operator; the caller records which).
   */
  destroyFileKeys(token: string, project: string, fileIds: string[]): Promise<boolean>;
  /**
   * An egress request as the caller may see it (its requester, state and frozen manifest), or
   * null if it does not exist for them.
   */
  egress(token: string, project: string, requestId: number): Promise<EgressManifest | null>;
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

/** Identity and roles from the KMS, asked with the caller's own token. */
export class KmsAuthority implements IngressAuthority {
  constructor(private readonly baseUrl: string) {}

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

  async destroyFileKeys(): Promise<boolean> {
    // The KMS has no per-file key deletion yet; see the uploader README ("KMS endpoints").
    return false;
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

  async destroyFileKeys(): Promise<boolean> {
    return false;
  }

  async egress(): Promise<EgressManifest | null> {
    throw new AuthorityUnavailableError('egress downloads need the KMS (serve with --kms)');
  }
}
