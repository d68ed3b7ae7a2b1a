/**
 * Signing in to the TRE console. The KMS is a JupyterHub service, so the browser signs in
 * through the hub's OAuth 2 provider as jupyterhub's own HubOAuth does: the console sends it to
 * `/hub/api/oauth2/authorize` with a state and a PKCE challenge bound to an HttpOnly cookie, the
 * hub sends it back to `oauth_callback` with a one-time code, and the KMS exchanges the code at
 * `/hub/api/oauth2/token` and identifies the user with `/hub/api/user`.
 *
 * The hub token stays on the server: the browser holds only a random session id (HttpOnly,
 * SameSite=Strict, Secure over TLS). The database keeps the id's SHA-256 and the token sealed
 * under a key derived from the id, so neither the table nor the cookie alone yields the token.
 * Every request resolves the token at the hub again (cached briefly), so logging out of the hub,
 * which revokes the token, ends the console session too.
 *
 * Cookie-authenticated API requests must echo an XSRF value in a header. It is derived from the
 * session id and handed to the page in a cookie readable only under `console/`: user servers
 * share the hub's origin, and a script from one of them can make the browser send the session
 * cookie, but it cannot read a cookie of another path.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Request, Response } from 'express';
import type { Logger } from 'pino';
import type { OAuthClientConfig } from './config.js';
import { KmsError } from './errors.js';
import type { Authenticator } from './hub-auth.js';
import type { HubUser, Kms } from './kms.js';
import { publicBase } from './prefix.js';
import { SessionStore } from './store/sessions.js';

export const SESSION_COOKIE = 'tre-kms-session';
export const XSRF_COOKIE = 'tre-kms-xsrf';
export const STATE_COOKIE = 'tre-kms-oauth-state';
export const XSRF_HEADER = 'x-tre-xsrf';

/** A console session ends after this at the latest, whatever the hub token's lifetime. */
const SESSION_MS = 12 * 3600 * 1000;
/** Without an idle span configured, a console session unused for this long ends. */
const DEFAULT_IDLE_MS = 30 * 60 * 1000;
/** A session's last use is written at most this often (a database write per request is waste). */
const TOUCH_MS = 60 * 1000;
/** An unfinished sign-in is forgotten after this (HubOAuth's oauth_state_max_age). */
const STATE_MS = 10 * 60 * 1000;
const ID = /^[A-Za-z0-9_-]{43}$/;

const b64 = (b: Buffer): string => b.toString('base64url');
const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();
const mac = (key: string, what: string): string =>
  b64(createHmac('sha256', key).update(what).digest());

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Every value of one cookie in a Cookie header (a browser may send several of one name). */
export function readCookies(header: string | undefined, name: string): string[] {
  if (!header) return [];
  const out: string[] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/** The OAuth `state` sent to the hub for a state cookie value, and its PKCE verifier. */
export function stateFor(secret: string): { state: string; verifier: string; challenge: string } {
  const verifier = mac(secret, 'tre-kms console pkce');
  return {
    state: mac(secret, 'tre-kms console state'),
    verifier,
    challenge: b64(createHash('sha256').update(verifier).digest()),
  };
}

/** The XSRF value of a session: derived from its id, so nothing more is stored. */
export const xsrfFor = (sessionId: string): string => mac(sessionId, 'tre-kms console xsrf');

function tokenKey(sessionId: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', sessionId, Buffer.alloc(0), 'tre-kms console hub token', 32),
  );
}

function seal(sessionId: string, idHash: Buffer, token: string): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', tokenKey(sessionId), iv);
  c.setAAD(idHash);
  const body = Buffer.concat([c.update(token, 'utf8'), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]);
}

function unseal(sessionId: string, idHash: Buffer, sealed: Buffer): string | null {
  try {
    const d = createDecipheriv('aes-256-gcm', tokenKey(sessionId), sealed.subarray(0, 12));
    d.setAAD(idHash);
    d.setAuthTag(sealed.subarray(12, 28));
    return Buffer.concat([d.update(sealed.subarray(28)), d.final()]).toString('utf8');
  } catch {
    return null;
  }
}

export class SignInRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ConsoleAuthOptions {
  kms: Kms;
  auth: Authenticator;
  logger: Logger;
  /** Absent when the KMS is not the hub's OAuth client: sessions then come from API tokens only. */
  oauth?: OAuthClientConfig;
  /** The KMS's own hub API token: the hub registers it as the OAuth client's secret. */
  clientSecret?: string;
  timeoutMs?: number;
  /** A session unused for this long ends (default DEFAULT_IDLE_MS). */
  idleMs?: number;
}

export class ConsoleAuth {
  private readonly sessions: SessionStore;

  constructor(private readonly opts: ConsoleAuthOptions) {
    this.sessions = new SessionStore(opts.kms.db, opts.idleMs ?? DEFAULT_IDLE_MS);
  }

  get oauth(): boolean {
    return this.opts.oauth !== undefined;
  }

  private secure(req: IncomingMessage): boolean {
    if (this.opts.oauth?.https) return true;
    if ((req.socket as TLSSocket).encrypted) return true;
    // Set by the hub's proxy; a forged value could only make the cookie stricter.
    const proto = String(req.headers['x-forwarded-proto'] ?? '')
      .split(',')[0]!
      .trim();
    return proto.toLowerCase() === 'https';
  }

  /** The live session a request's cookie names, if any (no call to the hub). */
  private find(
    req: IncomingMessage,
  ): { id: string; idHash: Buffer; username: string; sealed: Buffer; lastSeen: number } | null {
    const now = this.opts.kms.now().getTime();
    for (const id of readCookies(req.headers.cookie, SESSION_COOKIE)) {
      if (!ID.test(id)) continue;
      const idHash = sha256(id);
      const row = this.sessions.get(idHash, now);
      if (row) {
        return {
          id,
          idHash,
          username: row.username,
          sealed: row.sealed,
          lastSeen: row.last_seen_at,
        };
      }
    }
    return null;
  }

  hasSession(req: IncomingMessage): boolean {
    return this.find(req) !== null;
  }

  /**
   * The user of a cookie-authenticated API request. Throws 401 without a live session, 403
   * without the session's XSRF value in the header.
   */
  async userFor(req: IncomingMessage): Promise<HubUser> {
    const s = this.find(req);
    if (!s) {
      throw new KmsError(
        401,
        'unauthorized',
        readCookies(req.headers.cookie, SESSION_COOKIE).length
          ? 'the console session has ended: sign in again'
          : 'send Authorization: token <JupyterHub API token>',
      );
    }
    const given = req.headers[XSRF_HEADER];
    if (typeof given !== 'string' || !sameText(given, xsrfFor(s.id))) {
      throw new KmsError(403, 'xsrf', `a console request needs the ${XSRF_HEADER} header`);
    }
    const token = unseal(s.id, s.idHash, s.sealed);
    const user = token ? await this.opts.auth.resolve(token) : null;
    if (!user || user.service || user.name !== s.username) {
      // Revoked at the hub (e.g. the user logged out there): the session ends with the token.
      this.sessions.delete(s.idHash);
      throw new KmsError(401, 'unauthorized', 'the console session has ended: sign in again');
    }
    const now = this.opts.kms.now().getTime();
    if (now - s.lastSeen >= TOUCH_MS) this.sessions.touch(s.idHash, now);
    return user;
  }

  /** Sends the browser to the hub to sign in, with a fresh state bound to a cookie. */
  startSignIn(req: Request, res: Response): void {
    const o = this.opts.oauth!;
    const secret = b64(randomBytes(32));
    const { state, challenge } = stateFor(secret);
    res.cookie(STATE_COOKIE, secret, {
      path: publicBase(req),
      httpOnly: true,
      // Lax: the hub may pass the browser through an outside identity provider on the way back.
      sameSite: 'lax',
      secure: this.secure(req),
      maxAge: STATE_MS,
    });
    const url = new URL(o.authorizeUrl, 'http://relative.invalid');
    url.searchParams.set('client_id', o.clientId);
    url.searchParams.set('redirect_uri', o.redirectUri);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('state', state);
    url.searchParams.set('code_challenge', challenge);
    url.searchParams.set('code_challenge_method', 'S256');
    const target =
      url.origin === 'http://relative.invalid' ? url.pathname + url.search : url.toString();
    res.redirect(302, target);
  }

  /**
   * The hub's redirect back: the state must match the cookie of this browser, the code is
   * exchanged once (the hub refuses a second use), and the session replaces the state cookie.
   */
  async finishSignIn(req: Request, res: Response, query: Record<string, string>): Promise<string> {
    const o = this.opts.oauth;
    const base = publicBase(req);
    const secrets = readCookies(req.headers.cookie, STATE_COOKIE);
    res.clearCookie(STATE_COOKIE, {
      path: base,
      httpOnly: true,
      sameSite: 'lax',
      secure: this.secure(req),
    });
    if (!o) throw new SignInRefused(404, 'this KMS is not a JupyterHub OAuth client');
    if (query.error) {
      throw new SignInRefused(403, `the hub refused the sign-in (${query.error.slice(0, 100)})`);
    }
    if (!query.code || !query.state) {
      throw new SignInRefused(400, 'the sign-in answer has no code or state');
    }
    const match = secrets.find((s) => sameText(stateFor(s).state, query.state!));
    if (!match) {
      this.opts.logger.warn({ event: 'console.signin', result: 'bad_state' }, 'sign-in refused');
      throw new SignInRefused(403, 'the sign-in state does not match this browser: sign in again');
    }
    let reply: Awaited<ReturnType<typeof fetch>>;
    try {
      reply = await fetch(o.tokenUrl, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-www-form-urlencoded',
          Accept: 'application/json',
        },
        body: new URLSearchParams({
          client_id: o.clientId,
          client_secret: this.opts.clientSecret ?? '',
          grant_type: 'authorization_code',
          code: query.code,
          redirect_uri: o.redirectUri,
          code_verifier: stateFor(match).verifier,
        }).toString(),
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 5000),
      });
    } catch (e) {
      throw new SignInRefused(503, `cannot reach the hub: ${(e as Error).message}`);
    }
    const body = (await reply.json().catch(() => null)) as { access_token?: unknown } | null;
    if (!reply.ok || typeof body?.access_token !== 'string') {
      this.opts.logger.warn(
        { event: 'console.signin', result: 'code_refused', status: reply.status },
        'sign-in refused',
      );
      throw new SignInRefused(
        403,
        'the hub refused the sign-in code (used or expired): sign in again',
      );
    }
    const user = await this.opts.auth.resolve(body.access_token);
    if (!user || user.service) throw new SignInRefused(403, 'the hub does not know this user');
    this.open(req, res, user, body.access_token, 'oauth');
    return `${base}console/`;
  }

  /** A session for an API token sent in the Authorization header (API clients, no hub OAuth). */
  async fromToken(req: Request, res: Response, token: string): Promise<HubUser> {
    const user = await this.opts.auth.resolve(token);
    if (!user) throw new KmsError(401, 'unauthorized', 'the hub does not know this token');
    if (user.service)
      throw new KmsError(403, 'forbidden', 'a service has no console', 'user_required');
    this.open(req, res, user, token, 'token');
    return user;
  }

  private open(req: Request, res: Response, user: HubUser, token: string, how: string): void {
    const kms = this.opts.kms;
    const id = b64(randomBytes(32));
    const idHash = sha256(id);
    const now = kms.now();
    kms.transaction(() => {
      this.sessions.add(
        idHash,
        user.name,
        seal(id, idHash, token),
        now,
        now.getTime() + SESSION_MS,
      );
      kms.log(user.name, 'console.signin', `console:${how}`);
    });
    const base = publicBase(req);
    const secure = this.secure(req);
    res.cookie(SESSION_COOKIE, id, {
      path: base,
      httpOnly: true,
      sameSite: 'strict',
      secure,
      maxAge: SESSION_MS,
    });
    res.cookie(XSRF_COOKIE, xsrfFor(id), {
      path: `${base}console/`,
      sameSite: 'strict',
      secure,
      maxAge: SESSION_MS,
    });
    this.opts.logger.info({ event: 'console.signin', user: user.name, how }, 'console sign-in');
  }

  /** Ends the request's session (needs its XSRF value) and clears the cookies. */
  signOut(req: Request, res: Response): void {
    const s = this.find(req);
    if (s) {
      const given = req.headers[XSRF_HEADER];
      if (typeof given !== 'string' || !sameText(given, xsrfFor(s.id))) {
        throw new KmsError(403, 'xsrf', `a console request needs the ${XSRF_HEADER} header`);
      }
      const kms = this.opts.kms;
      kms.transaction(() => {
        this.sessions.delete(s.idHash);
        kms.log(s.username, 'console.signout', 'console:session');
      });
    }
    const base = publicBase(req);
    const secure = this.secure(req);
    res.clearCookie(SESSION_COOKIE, { path: base, httpOnly: true, sameSite: 'strict', secure });
    res.clearCookie(XSRF_COOKIE, { path: `${base}console/`, sameSite: 'strict', secure });
  }
}
