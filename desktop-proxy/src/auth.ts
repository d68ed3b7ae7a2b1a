import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { ConfigError, TicketError } from './errors.js';

/** The outcome of checking one request; `reason` is a short code that is safe to log. */
export type AuthResult =
  | { ok: true; user: string }
  | { ok: false; status: 401 | 403 | 503; reason: string; user?: string };

export interface Authenticator {
  readonly mode: 'hub' | 'ticket' | 'none';
  authenticate(req: IncomingMessage): Promise<AuthResult>;
}

/** Looks up one cookie by name; malformed percent-encoding yields the raw value. */
export function getCookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    const value = part.slice(eq + 1).trim();
    try {
      return decodeURIComponent(value);
    } catch {
      return value;
    }
  }
  return undefined;
}

function getQueryParam(req: IncomingMessage, name: string): string | undefined {
  const url = new URL(req.url ?? '/', 'http://localhost');
  return url.searchParams.get(name) ?? undefined;
}

// ---------------------------------------------------------------------------------------------
// JupyterHub tokens

export interface HubAuthOptions {
  /** The hub API base, e.g. `http://127.0.0.1:8081/hub/api`. */
  hubApi: string;
  /** The session owner; nobody else may connect. */
  user: string;
  /** How long a hub answer is reused, so reconnects do not hammer the hub. */
  cacheTtlMs?: number;
  /** A cookie carrying a hub API token (for browsers, which cannot set headers on WebSockets). */
  cookieName?: string;
  requestTimeoutMs?: number;
}

export const DEFAULT_HUB_COOKIE = 'tre-desktop-token';

/**
 * Reads the token from `Authorization: token|Bearer ...`, the `token` query parameter (as
 * Jupyter servers accept it) or the cookie, and asks the hub whose token it is.
 */
export function hubAuthenticator(options: HubAuthOptions): Authenticator {
  let base: URL;
  try {
    base = new URL(options.hubApi.endsWith('/') ? options.hubApi : `${options.hubApi}/`);
  } catch {
    throw new ConfigError(`hub API: not a URL: ${options.hubApi}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new ConfigError('hub API: must be an http or https URL');
  }
  if (!options.user) throw new ConfigError('hub auth needs the session owner (user)');
  const userUrl = new URL('user', base);
  const cacheTtlMs = options.cacheTtlMs ?? 30_000;
  const timeoutMs = options.requestTimeoutMs ?? 5_000;
  const cookieName = options.cookieName ?? DEFAULT_HUB_COOKIE;
  // Keyed by a hash so the map never holds a usable token.
  const cache = new Map<string, { name: string | null; expires: number }>();
  const maxCacheEntries = 1000;

  async function lookup(token: string): Promise<string | null | 'unavailable'> {
    const key = createHash('sha256').update(token).digest('base64');
    const hit = cache.get(key);
    if (hit && hit.expires > Date.now()) return hit.name;
    let name: string | null;
    try {
      const res = await fetch(userUrl, {
        headers: { Authorization: `token ${token}`, Accept: 'application/json' },
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'error',
      });
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        name = null;
      } else if (!res.ok) {
        await res.body?.cancel();
        return 'unavailable';
      } else {
        const body = (await res.json()) as { name?: unknown };
        name = typeof body.name === 'string' ? body.name : null;
      }
    } catch {
      return 'unavailable';
    }
    if (cache.size >= maxCacheEntries) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    cache.set(key, { name, expires: Date.now() + cacheTtlMs });
    return name;
  }

  return {
    mode: 'hub',
    async authenticate(req) {
      const header = req.headers.authorization;
      const fromHeader = header ? /^(?:token|bearer)\s+(\S+)$/i.exec(header)?.[1] : undefined;
      const token =
        fromHeader ?? getQueryParam(req, 'token') ?? getCookie(req, cookieName) ?? undefined;
      if (!token) return { ok: false, status: 401, reason: 'no-credentials' };
      const name = await lookup(token);
      if (name === 'unavailable') return { ok: false, status: 503, reason: 'hub-unavailable' };
      if (name === null) return { ok: false, status: 401, reason: 'invalid-token' };
      if (name !== options.user)
        return { ok: false, status: 403, reason: 'wrong-user', user: name };
      return { ok: true, user: name };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Signed tickets

export const TICKET_KEY_BYTES = 32;
export const DEFAULT_TICKET_TTL_SECONDS = 60;
export const MAX_TICKET_TTL_SECONDS = 3600;
const TICKET_VERSION = 'v1';

export interface TicketClaims {
  user: string;
  session: string;
  /** Unix time in seconds after which the ticket is refused. */
  expiresAt: number;
}

function mac(key: Buffer, payload: string): Buffer {
  return createHmac('sha256', key).update(payload).digest();
}

function checkKey(key: Buffer): void {
  if (key.length < TICKET_KEY_BYTES) {
    throw new ConfigError(`ticket key must be at least ${TICKET_KEY_BYTES} bytes`);
  }
}

/**
 * Issues a ticket `v1.<user>.<expiry>.<session>.<mac>` (fields base64url, expiry in unix
 * seconds), the MAC being HMAC-SHA256 over everything before it, so field boundaries are
 * unambiguous whatever the user and session names contain.
 */
export function issueTicket(
  key: Buffer,
  claims: { user: string; session: string; ttlSeconds?: number; now?: number },
): string {
  checkKey(key);
  const ttl = claims.ttlSeconds ?? DEFAULT_TICKET_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl <= 0 || ttl > MAX_TICKET_TTL_SECONDS) {
    throw new ConfigError(`ticket lifetime must be 1..${MAX_TICKET_TTL_SECONDS} seconds`);
  }
  if (!claims.user || !claims.session) throw new ConfigError('ticket needs a user and a session');
  const now = claims.now ?? Date.now();
  const expiresAt = Math.floor(now / 1000) + ttl;
  const payload = [
    TICKET_VERSION,
    Buffer.from(claims.user, 'utf8').toString('base64url'),
    String(expiresAt),
    Buffer.from(claims.session, 'utf8').toString('base64url'),
  ].join('.');
  return `${payload}.${mac(key, payload).toString('base64url')}`;
}

/** Checks a ticket's MAC (constant time), expiry and session; throws TicketError. */
export function verifyTicket(
  key: Buffer,
  ticket: string,
  expect: { session: string; now?: number },
): TicketClaims {
  const parts = ticket.split('.');
  if (parts.length !== 5 || parts[0] !== TICKET_VERSION) throw new TicketError('malformed');
  const [, userB64, expiryText, sessionB64, macB64] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  const b64url = /^[A-Za-z0-9_-]*$/;
  if (!b64url.test(userB64) || !b64url.test(sessionB64) || !b64url.test(macB64)) {
    throw new TicketError('malformed');
  }
  if (!/^\d{1,12}$/.test(expiryText)) throw new TicketError('malformed');
  const given = Buffer.from(macB64, 'base64url');
  const wanted = mac(key, parts.slice(0, 4).join('.'));
  if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) {
    throw new TicketError('bad-signature');
  }
  const expiresAt = Number(expiryText);
  const nowSeconds = Math.floor((expect.now ?? Date.now()) / 1000);
  if (expiresAt <= nowSeconds) throw new TicketError('expired');
  // Even a validly signed ticket must be short-lived: a leaked long-lived one is a standing key.
  if (expiresAt > nowSeconds + MAX_TICKET_TTL_SECONDS) throw new TicketError('lifetime-too-long');
  const user = Buffer.from(userB64, 'base64url').toString('utf8');
  const session = Buffer.from(sessionB64, 'base64url').toString('utf8');
  if (session !== expect.session) throw new TicketError('wrong-session');
  return { user, session, expiresAt };
}

/** Reads a ticket key file; it must be private to its owner and hold enough key material. */
export async function readTicketKey(path: string): Promise<Buffer> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new ConfigError(`ticket key file not readable: ${path}`);
  }
  if (!info.isFile()) throw new ConfigError(`ticket key file is not a regular file: ${path}`);
  if ((info.mode & 0o077) !== 0) {
    throw new ConfigError(`ticket key file must not be accessible by group or others: ${path}`);
  }
  const key = await readFile(path);
  checkKey(key);
  return key;
}

/** Creates a new random ticket key file with mode 0600; never overwrites an existing file. */
export async function createTicketKeyFile(path: string): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot create ticket key file ${path}: ${code ?? 'error'}`);
  }
  try {
    await handle.writeFile(randomBytes(TICKET_KEY_BYTES));
  } finally {
    await handle.close();
  }
}

export interface TicketAuthOptions {
  key: Buffer;
  /** The session owner; a ticket for anyone else is refused. */
  user: string;
  /** The session this proxy serves; tickets are bound to it. */
  session: string;
}

/** Accepts a ticket from the `ticket` query parameter or the `Authorization: Ticket ...` header. */
export function ticketAuthenticator(options: TicketAuthOptions): Authenticator {
  checkKey(options.key);
  if (!options.user || !options.session) {
    throw new ConfigError('ticket auth needs the session owner (user) and the session id');
  }
  return {
    mode: 'ticket',
    async authenticate(req) {
      const header = req.headers.authorization;
      const fromHeader = header ? /^ticket\s+(\S+)$/i.exec(header)?.[1] : undefined;
      const ticket = fromHeader ?? getQueryParam(req, 'ticket');
      if (!ticket) return { ok: false, status: 401, reason: 'no-credentials' };
      let claims: TicketClaims;
      try {
        claims = verifyTicket(options.key, ticket, { session: options.session });
      } catch (err) {
        if (err instanceof TicketError) {
          return { ok: false, status: 401, reason: `ticket-${err.reason}` };
        }
        throw err;
      }
      if (claims.user !== options.user) {
        return { ok: false, status: 403, reason: 'wrong-user', user: claims.user };
      }
      return { ok: true, user: claims.user };
    },
  };
}

/** Development only: everyone is `user`. The proxy refuses this mode unless bound to loopback. */
export function insecureNoAuthenticator(user = 'anonymous'): Authenticator {
  return {
    mode: 'none',
    async authenticate() {
      return { ok: true, user };
    },
  };
}
