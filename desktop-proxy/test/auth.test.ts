import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createTicketKeyFile,
  hubAuthenticator,
  issueTicket,
  readTicketKey,
  ticketAuthenticator,
  verifyTicket,
} from '../src/auth.js';
import { ConfigError, TicketError } from '../src/errors.js';

const key = Buffer.alloc(32, 7);
const otherKey = Buffer.alloc(32, 8);

function request(url: string, headers: Record<string, string> = {}): IncomingMessage {
  return { url, headers } as unknown as IncomingMessage;
}

function rejection(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TicketError) return err.reason;
    throw err;
  }
  throw new Error('ticket was accepted');
}

describe('tickets', () => {
  const now = 1_800_000_000_000;

  test('a fresh ticket verifies and carries its claims', () => {
    const ticket = issueTicket(key, { user: 'alice', session: 'job-1', ttlSeconds: 60, now });
    expect(verifyTicket(key, ticket, { session: 'job-1', now })).toEqual({
      user: 'alice',
      session: 'job-1',
      expiresAt: now / 1000 + 60,
    });
  });

  test('names with separators cannot be confused with other fields', () => {
    const ticket = issueTicket(key, { user: 'a.b|c', session: 's.1|x', now });
    expect(verifyTicket(key, ticket, { session: 's.1|x', now }).user).toBe('a.b|c');
  });

  test('expired, forged, tampered, wrong-session and malformed tickets are rejected', () => {
    const ticket = issueTicket(key, { user: 'alice', session: 'job-1', ttlSeconds: 60, now });
    expect(
      rejection(() => verifyTicket(key, ticket, { session: 'job-1', now: now + 60_000 })),
    ).toBe('expired');
    expect(rejection(() => verifyTicket(otherKey, ticket, { session: 'job-1', now }))).toBe(
      'bad-signature',
    );
    const parts = ticket.split('.');
    parts[1] = Buffer.from('mallory').toString('base64url');
    expect(rejection(() => verifyTicket(key, parts.join('.'), { session: 'job-1', now }))).toBe(
      'bad-signature',
    );
    const later = ticket.split('.');
    later[2] = String(Number(later[2]) + 3000);
    expect(rejection(() => verifyTicket(key, later.join('.'), { session: 'job-1', now }))).toBe(
      'bad-signature',
    );
    expect(rejection(() => verifyTicket(key, ticket, { session: 'job-2', now }))).toBe(
      'wrong-session',
    );
    for (const bad of ['', 'v1', 'v2.a.1.b.c', `${ticket}.x`, ticket.replace('v1.', 'v1.!')]) {
      expect(rejection(() => verifyTicket(key, bad, { session: 'job-1', now }))).toBe('malformed');
    }
  });

  test('a validly signed ticket that lives too long is refused', () => {
    const ticket = issueTicket(key, { user: 'alice', session: 'job-1', ttlSeconds: 3600, now });
    // Verified an hour before it was issued, its remaining life exceeds the maximum.
    expect(
      rejection(() => verifyTicket(key, ticket, { session: 'job-1', now: now - 3_600_000 })),
    ).toBe('lifetime-too-long');
    expect(() => issueTicket(key, { user: 'a', session: 's', ttlSeconds: 3601 })).toThrow(
      ConfigError,
    );
  });

  test('short keys are refused', () => {
    expect(() => issueTicket(Buffer.alloc(16), { user: 'a', session: 's' })).toThrow(ConfigError);
  });
});

describe('ticket key files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dp-key-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('keygen writes 32 random bytes with mode 0600 and never overwrites', async () => {
    const path = join(dir, 'k1');
    await createTicketKeyFile(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const key1 = await readTicketKey(path);
    expect(key1.length).toBe(32);
    await expect(createTicketKeyFile(path)).rejects.toThrow(ConfigError);
    expect(await readFile(path)).toEqual(key1);
  });

  test('a key file readable by others, too short or missing is refused', async () => {
    const open = join(dir, 'k2');
    await writeFile(open, Buffer.alloc(32, 1), { mode: 0o644 });
    await chmod(open, 0o644);
    await expect(readTicketKey(open)).rejects.toThrow(/group or others/);
    const short = join(dir, 'k3');
    await writeFile(short, Buffer.alloc(8, 1), { mode: 0o600 });
    await expect(readTicketKey(short)).rejects.toThrow(/at least 32 bytes/);
    await expect(readTicketKey(join(dir, 'missing'))).rejects.toThrow(ConfigError);
  });
});

describe('ticket authenticator', () => {
  const auth = ticketAuthenticator({ key, user: 'alice', session: 'job-1' });

  test('accepts the owner with a ticket in the query or header', async () => {
    const ticket = issueTicket(key, { user: 'alice', session: 'job-1' });
    expect(await auth.authenticate(request(`/websockify?ticket=${ticket}`))).toEqual({
      ok: true,
      user: 'alice',
    });
    expect(
      await auth.authenticate(request('/websockify', { authorization: `Ticket ${ticket}` })),
    ).toEqual({ ok: true, user: 'alice' });
  });

  test('refuses no ticket (401), a forged one (401) and another user (403)', async () => {
    expect(await auth.authenticate(request('/websockify'))).toMatchObject({
      ok: false,
      status: 401,
      reason: 'no-credentials',
    });
    const forged = issueTicket(otherKey, { user: 'alice', session: 'job-1' });
    expect(await auth.authenticate(request(`/websockify?ticket=${forged}`))).toMatchObject({
      ok: false,
      status: 401,
      reason: 'ticket-bad-signature',
    });
    const bob = issueTicket(key, { user: 'bob', session: 'job-1' });
    expect(await auth.authenticate(request(`/websockify?ticket=${bob}`))).toEqual({
      ok: false,
      status: 403,
      reason: 'wrong-user',
      user: 'bob',
    });
  });
});

/** Answers GET /hub/api/user the way JupyterHub does for a token. */
function fakeHub(
  tokens: Record<string, string>,
): Promise<{ server: Server; url: string; hits: string[] }> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    const token = /^token (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    hits.push(req.url ?? '');
    if (req.url !== '/hub/api/user') {
      res.writeHead(404).end();
      return;
    }
    const name = token ? tokens[token] : undefined;
    if (!name) {
      res.writeHead(403, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ status: 403, message: 'Missing or invalid credentials.' }));
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kind: 'user', name, admin: false, groups: [], scopes: [] }));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        server,
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hub/api`,
        hits,
      }),
    ),
  );
}

describe('hub authenticator (against an HTTP double of the hub API)', () => {
  let hub: Awaited<ReturnType<typeof fakeHub>>;
  beforeAll(async () => {
    hub = await fakeHub({ 'alice-token': 'alice', 'bob-token': 'bob' });
  });
  afterAll(() => new Promise<void>((r) => hub.server.close(() => r())));

  test('the owner is accepted from header, query or cookie; answers are cached', async () => {
    const auth = hubAuthenticator({ hubApi: hub.url, user: 'alice' });
    const before = hub.hits.length;
    expect(await auth.authenticate(request('/', { authorization: 'token alice-token' }))).toEqual({
      ok: true,
      user: 'alice',
    });
    expect(await auth.authenticate(request('/?token=alice-token'))).toEqual({
      ok: true,
      user: 'alice',
    });
    expect(
      await auth.authenticate(request('/', { cookie: 'x=1; tre-desktop-token=alice-token' })),
    ).toEqual({ ok: true, user: 'alice' });
    expect(hub.hits.length - before).toBe(1);
  });

  test('another user is refused with 403, an unknown token with 401', async () => {
    const auth = hubAuthenticator({ hubApi: hub.url, user: 'alice' });
    expect(await auth.authenticate(request('/?token=bob-token'))).toEqual({
      ok: false,
      status: 403,
      reason: 'wrong-user',
      user: 'bob',
    });
    expect(await auth.authenticate(request('/?token=nobody'))).toMatchObject({
      ok: false,
      status: 401,
      reason: 'invalid-token',
    });
    expect(await auth.authenticate(request('/'))).toMatchObject({ status: 401 });
  });

  test('cached answers expire', async () => {
    const auth = hubAuthenticator({ hubApi: hub.url, user: 'alice', cacheTtlMs: 1 });
    const before = hub.hits.length;
    await auth.authenticate(request('/?token=alice-token'));
    await new Promise((r) => setTimeout(r, 5));
    await auth.authenticate(request('/?token=alice-token'));
    expect(hub.hits.length - before).toBe(2);
  });

  test('an unreachable hub refuses with 503', async () => {
    const auth = hubAuthenticator({ hubApi: 'http://127.0.0.1:1/hub/api', user: 'alice' });
    expect(await auth.authenticate(request('/?token=alice-token'))).toMatchObject({
      ok: false,
      status: 503,
      reason: 'hub-unavailable',
    });
  });
});
