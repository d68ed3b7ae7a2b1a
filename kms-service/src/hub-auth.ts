/**
 * Identity from JupyterHub. A request carries `Authorization: token <hub token>` (or Bearer);
 * the hub resolves it with GET {api}/user, as jupyterhub's own HubAuth does. Answers are cached
 * briefly under a SHA-256 of the token, so the token itself is never kept in memory maps or logs.
 */
import { createHash } from 'node:crypto';
import type { HubUser } from './kms.js';

export interface Authenticator {
  /** The hub user for a token, or null if the hub does not know it. Throws if the hub is down. */
  resolve(token: string): Promise<HubUser | null>;
}

export class HubUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HubUnavailableError';
  }
}

export interface HubAuthOptions {
  /** e.g. http://127.0.0.1:8081/hub/api */
  apiUrl: string;
  /** The KMS's own service token, used only to read a user's admin flag when the model lacks it. */
  apiToken?: string;
  cacheSeconds?: number;
  /** Hub services whose tokens the KMS accepts (as services, never as people), e.g. the ingress. */
  services?: readonly string[];
  timeoutMs?: number;
  now?: () => number;
}

interface CacheEntry {
  user: HubUser;
  expires: number;
}

const MAX_CACHE = 10_000;

export function tokenFromHeader(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^(?:token|bearer)\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

export class HubAuthenticator implements Authenticator {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly apiUrl: string;
  private readonly ttl: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;

  constructor(private readonly opts: HubAuthOptions) {
    this.apiUrl = opts.apiUrl.replace(/\/+$/, '');
    this.ttl = (opts.cacheSeconds ?? 30) * 1000;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.now = opts.now ?? Date.now;
  }

  async resolve(token: string): Promise<HubUser | null> {
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.cache.get(key);
    if (hit && hit.expires > this.now()) return hit.user;
    if (hit) this.cache.delete(key);
    const model = await this.get('/user', token);
    if (model === null || typeof model.name !== 'string') return null;
    if (model.kind === 'service') {
      if (!this.opts.services?.includes(model.name)) return null;
      return this.remember(key, { name: model.name, admin: false, service: true });
    }
    let admin = model.admin;
    if (typeof admin !== 'boolean' && this.opts.apiToken) {
      const full = await this.get(`/users/${encodeURIComponent(model.name)}`, this.opts.apiToken);
      admin = full?.admin;
    }
    return this.remember(key, { name: model.name, admin: admin === true });
  }

  private remember(key: string, user: HubUser): HubUser {
    if (this.ttl > 0) {
      if (this.cache.size >= MAX_CACHE) this.cache.clear();
      this.cache.set(key, { user, expires: this.now() + this.ttl });
    }
    return user;
  }

  private async get(path: string, token: string): Promise<Record<string, unknown> | null> {
    let res: Response;
    try {
      res = await fetch(this.apiUrl + path, {
        headers: { Authorization: `token ${token}`, Accept: 'application/json' },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new HubUnavailableError(`cannot reach the hub API: ${(e as Error).message}`);
    }
    if (res.status === 401 || res.status === 403 || res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new HubUnavailableError(`the hub API answered ${res.status}`);
    }
    const body = (await res.json()) as unknown;
    return typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : null;
  }
}
