/**
 * Bad input at the ingress, sent as raw tus and HTTP requests to a real server on loopback:
 * every refusal has a clear status and code and leaves storage and database as they were.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createEncryptStream, HEADER_LEN } from '@tre/crypto';
import { StaticAuthority, tokenHash } from '../src/ingress/authority.js';
import type { ProjectRole } from '../src/ingress/authority.js';
import { IngressServer } from '../src/ingress/server.js';
import {
  UNIT_CIPHER,
  UNIT_PLAIN,
  fileDigest,
  unitCount,
  unitEnd,
  unitHash,
  unitStart,
} from '../src/units.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-bad-'));
const TOK = { alice: 'a-token-1234567890', carol: 'c-token-1234567890' };
const MAX_CHUNK = 2 * UNIT_CIPHER + HEADER_LEN;
let server: IngressServer;
let base: string;
let requestId: string;
let otherRequest: string;
let cipher: Buffer;
let fileId: string;

function encrypt(plain: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const key = Buffer.alloc(32, 7);
    const s = createEncryptStream(key);
    const out: Buffer[] = [];
    s.on('data', (d: Buffer) => out.push(d));
    s.on('end', () => resolve(Buffer.concat(out)));
    s.on('error', reject);
    s.end(plain);
  });
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP request; `declared` lets a test lie about Content-Length, `cut` drops the socket. */
function raw(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: Buffer,
  opts: { declared?: number; cut?: boolean } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request(base + path, {
      method,
      headers: {
        'Tus-Resumable': '1.0.0',
        ...headers,
        ...(body ? { 'Content-Length': String(opts.declared ?? body.length) } : {}),
      },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
      );
    });
    req.on('error', (e) =>
      opts.cut ? resolve({ status: 0, headers: {}, body: e.message }) : reject(e),
    );
    if (body) req.write(body);
    if (opts.cut) setTimeout(() => req.destroy(), 300);
    else req.end();
  });
}

function meta(o: Record<string, string>): string {
  return Object.entries(o)
    .map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`)
    .join(',');
}

const auth = (who: keyof typeof TOK) => ({ Authorization: `token ${TOK[who]}` });
const patchHeaders = (offset: number) => ({
  ...auth('alice'),
  'Upload-Offset': String(offset),
  'Content-Type': 'application/offset+octet-stream',
});

async function snapshot(): Promise<string> {
  const tus = await readdir(join(dir, 'root', 'tus'));
  const sizes = await Promise.all(
    tus.sort().map(async (f) => {
      const p = join(dir, 'root', 'tus', f);
      return `${f}:${(await stat(p)).size}:${createHash('sha256')
        .update(await readFile(p))
        .digest('hex')}`;
    }),
  );
  const rows = server.store.db.prepare('SELECT id, state, digest FROM uploads ORDER BY id').all();
  return JSON.stringify({ sizes, rows });
}

async function head(id: string): Promise<number> {
  const r = await raw('HEAD', `/files/${id}`, auth('alice'));
  return Number(r.headers['upload-offset']);
}

async function create(
  id: string,
  size: number,
  extra: Record<string, string> = {},
  who: keyof typeof TOK = 'alice',
) {
  return raw('POST', '/files', {
    ...auth(who),
    'Upload-Length': String(size),
    'Upload-Metadata': meta({
      uploadId: id,
      project: 'p1',
      request: requestId,
      dir: '',
      entry: randomBytes(16).toString('base64url'),
      fileId,
      ...extra,
    }),
  });
}

function errCode(r: Res): string {
  try {
    return (JSON.parse(r.body) as { error: { code: string } }).error.code;
  } catch {
    return r.body.trim();
  }
}

beforeAll(async () => {
  const roles = (r: Record<string, ProjectRole>) => r;
  const users = [
    {
      tokenSha256: tokenHash(TOK.alice),
      username: 'alice',
      roles: roles({ p1: 'data_owner', p2: 'data_owner' }),
    },
    { tokenSha256: tokenHash(TOK.carol), username: 'carol', roles: roles({ p2: 'data_owner' }) },
  ];
  server = await IngressServer.create({
    root: join(dir, 'root'),
    authority: new StaticAuthority(users),
    logger: pino({ level: 'silent' }),
    maxChunkBytes: MAX_CHUNK,
    maxFileSize: 8 * UNIT_CIPHER,
    quotaBytes: 12 * UNIT_CIPHER,
  });
  base = `http://127.0.0.1:${await server.listen(0)}`;
  const open = await fetch(`${base}/v1/projects/p1/ingress-requests`, {
    method: 'POST',
    headers: auth('alice'),
  });
  requestId = ((await open.json()) as { id: string }).id;
  const open2 = await fetch(`${base}/v1/projects/p2/ingress-requests`, {
    method: 'POST',
    headers: auth('alice'),
  });
  otherRequest = ((await open2.json()) as { id: string }).id;
  await fetch(`${base}/v1/projects/p1/dirs`, {
    method: 'POST',
    headers: { ...auth('alice'), 'Content-Type': 'application/json' },
    body: JSON.stringify({ path: [] }),
  });
  cipher = await encrypt(randomBytes(2 * UNIT_PLAIN + 5000));
  fileId = cipher.subarray(2, HEADER_LEN).toString('hex');
  expect(unitCount(cipher.length)).toBe(3);
}, 30_000);

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the ingress refuses bad input and stores nothing of it', () => {
  const id = randomBytes(16).toString('hex');

  it('refuses unauthenticated, foreign-project and malformed creations', async () => {
    const before = await snapshot();
    const cases: Array<[Promise<Res>, number, string]> = [
      [
        raw('POST', '/files', {
          'Upload-Length': '100',
          'Upload-Metadata': meta({ uploadId: randomBytes(16).toString('hex') }),
        }),
        401,
        'unauthorized',
      ],
      [create(randomBytes(16).toString('hex'), cipher.length, {}, 'carol'), 403, 'forbidden'],
      [
        create(randomBytes(16).toString('hex'), cipher.length, { project: 'p2' }),
        404,
        'no_request',
      ],
      [
        create(randomBytes(16).toString('hex'), cipher.length, { request: otherRequest }),
        404,
        'no_request',
      ],
      [
        create(randomBytes(16).toString('hex'), cipher.length, { entry: '../../etc/passwd' }),
        400,
        'bad_name',
      ],
      [
        create(randomBytes(16).toString('hex'), cipher.length, { entry: 'gocryptfs.diriv' }),
        400,
        'bad_name',
      ],
      [
        create(randomBytes(16).toString('hex'), cipher.length, { dir: 'AAAAAAAAAAAAAAAAAAAAAA' }),
        404,
        'no_dir',
      ],
      [create(randomBytes(16).toString('hex'), HEADER_LEN + 1), 400, 'bad_size'],
      [create(randomBytes(16).toString('hex'), 9 * UNIT_CIPHER), 413, 'Maximum size exceeded'],
      [create('../../escape', cipher.length), 400, 'bad_metadata'],
    ];
    for (const [p, status, code] of cases) {
      const r = await p;
      expect({ status: r.status, body: r.body }).toEqual({
        status,
        body: expect.stringContaining(code),
      });
    }
    expect(await snapshot()).toBe(before);
  });

  it('accepts a valid creation once and refuses its replay', async () => {
    expect((await create(id, cipher.length)).status).toBe(201);
    const before = await snapshot();
    const again = await create(id, cipher.length);
    expect(again.status).toBe(409);
    expect(errCode(again)).toBe('upload_exists');
    expect(await snapshot()).toBe(before);
  });

  it('refuses out-of-order, unaligned and oversized chunks without storing anything', async () => {
    const before = await snapshot();
    const r1 = await raw(
      'PATCH',
      `/files/${id}`,
      patchHeaders(unitStart(1)),
      cipher.subarray(unitStart(1), unitEnd(1, cipher.length)),
    );
    expect([r1.status, errCode(r1)]).toEqual([409, 'Upload-Offset conflict']);
    const r2 = await raw('PATCH', `/files/${id}`, patchHeaders(0), cipher.subarray(0, 1000));
    expect([r2.status, errCode(r2)]).toEqual([400, 'unaligned_chunk']);
    const r3 = await raw(
      'PATCH',
      `/files/${id}`,
      patchHeaders(0),
      cipher.subarray(0, unitEnd(2, cipher.length)),
    );
    expect([r3.status, errCode(r3)]).toEqual([413, 'chunk_too_large']);
    const r4 = await raw('PATCH', `/files/${id}`, patchHeaders(17), cipher.subarray(17, 100));
    expect([r4.status, errCode(r4)]).toEqual([409, 'bad_offset']);
    const r5 = await raw('GET', `/files/${id}`, auth('alice'));
    expect(r5.status).toBe(405);
    const r6 = await raw(
      'PATCH',
      `/files/${id}`,
      { ...patchHeaders(0), ...auth('carol') },
      cipher.subarray(0, unitEnd(0, cipher.length)),
    );
    expect([r6.status, errCode(r6)]).toEqual([404, 'not_found']);
    expect(await head(id)).toBe(0);
    expect(await snapshot()).toBe(before);
  });

  it('drops the torn unit of a truncated chunk and keeps only whole units', async () => {
    const declared = unitEnd(1, cipher.length);
    const sent = unitEnd(0, cipher.length) + UNIT_CIPHER / 2;
    const r = await raw('PATCH', `/files/${id}`, patchHeaders(0), cipher.subarray(0, sent), {
      declared,
      cut: true,
    });
    expect(r.status).toBe(0);
    // The server may still be draining the cut request; the offset settles on a boundary.
    let off = -1;
    for (let i = 0; i < 50 && off !== unitEnd(0, cipher.length); i++) {
      off = await head(id);
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(off).toBe(unitEnd(0, cipher.length));
    const stored = await readFile(join(dir, 'root', 'tus', id));
    expect(stored.equals(cipher.subarray(0, off))).toBe(true);
  });

  it('refuses a replayed chunk and a chunk beyond the declared length', async () => {
    const u1 = cipher.subarray(unitStart(1), unitEnd(1, cipher.length));
    const ok = await raw('PATCH', `/files/${id}`, patchHeaders(unitStart(1)), u1);
    expect(ok.status).toBe(204);
    const before = await snapshot();
    const replay = await raw('PATCH', `/files/${id}`, patchHeaders(unitStart(1)), u1);
    expect([replay.status, errCode(replay)]).toEqual([409, 'Upload-Offset conflict']);
    const tail = Buffer.concat([cipher.subarray(unitStart(2)), randomBytes(4128)]);
    const over = await raw('PATCH', `/files/${id}`, patchHeaders(unitStart(2)), tail);
    expect([over.status, errCode(over)]).toEqual([413, 'beyond_length']);
    expect(await snapshot()).toBe(before);
  });

  it('discards a completed upload whose bytes do not match the digest', async () => {
    const tampered = Buffer.from(cipher.subarray(unitStart(2)));
    tampered[100] = tampered[100]! ^ 1;
    const last = await raw('PATCH', `/files/${id}`, patchHeaders(unitStart(2)), tampered);
    expect(last.status).toBe(204);
    const hashes = [0, 1, 2].map((k) =>
      unitHash(cipher.subarray(unitStart(k), unitEnd(k, cipher.length))),
    );
    const res = await fetch(`${base}/v1/uploads/${id}/complete`, {
      method: 'POST',
      headers: { ...auth('alice'), 'Content-Type': 'application/json' },
      body: JSON.stringify({ digest: fileDigest(cipher.length, hashes) }),
    });
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('digest_mismatch');
    expect(await readdir(join(dir, 'root', 'tus'))).toEqual([]);
    expect(await readdir(join(dir, 'root', 'projects', 'p1', 'staging'))).toEqual([]);
    expect(server.store.upload(id)?.state).toBe('deleted');
  });

  it('enforces the per-user quota', async () => {
    const before = await snapshot();
    // 12 units of quota: one file of 8 fits, a second of 8 does not.
    const a = randomBytes(16).toString('hex');
    expect((await create(a, 8 * UNIT_CIPHER)).status).toBe(201);
    const mid = await snapshot();
    expect(mid).not.toBe(before);
    const b = await create(randomBytes(16).toString('hex'), 8 * UNIT_CIPHER);
    expect([b.status, errCode(b)]).toEqual([413, 'quota_exceeded']);
    expect(await snapshot()).toBe(mid);
  });

  it('validates the JSON API against its OpenAPI description', async () => {
    const res = await fetch(`${base}/v1/ingress-requests/${requestId}/submit`, {
      method: 'POST',
      headers: { ...auth('alice'), 'Content-Type': 'application/json' },
      body: JSON.stringify({ checklist: { pseudonymised: 'yes' } }),
    });
    expect(res.status).toBe(400);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/tre_ingress_refused_total\{code="quota_exceeded"\} 1/);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });
});

describe('a last chunk that carries the digest', () => {
  beforeAll(async () => {
    // Frees the quota the tests above used.
    for (const u of server.store.uploadsIn('uploading')) {
      await raw('DELETE', `/files/${u.id}`, auth('alice'));
    }
  });

  const digestOf = (c: Buffer) =>
    fileDigest(
      c.length,
      Array.from({ length: unitCount(c.length) }, (_, k) =>
        unitHash(c.subarray(unitStart(k), unitEnd(k, c.length))),
      ),
    );

  it('is verified and staged in the same request', async () => {
    const id = randomBytes(16).toString('hex');
    expect((await create(id, cipher.length)).status).toBe(201);
    const mid = unitEnd(1, cipher.length);
    expect(
      (await raw('PATCH', `/files/${id}`, patchHeaders(0), cipher.subarray(0, mid))).status,
    ).toBe(204);
    const last = await raw(
      'PATCH',
      `/files/${id}`,
      { ...patchHeaders(mid), 'Tre-Digest': digestOf(cipher) },
      cipher.subarray(mid),
    );
    expect([last.status, last.headers['tre-upload-state']]).toEqual([204, 'staged']);
    expect(server.store.upload(id)).toMatchObject({ state: 'staged', digest: digestOf(cipher) });
    expect(await readdir(join(dir, 'root', 'projects', 'p1', 'staging'))).toContain(id);
    expect(await readdir(join(dir, 'root', 'tus'))).not.toContain(id);
  });

  it('is refused before storing anything when the digest is malformed', async () => {
    const id = randomBytes(16).toString('hex');
    expect((await create(id, cipher.length)).status).toBe(201);
    const before = await snapshot();
    const r = await raw(
      'PATCH',
      `/files/${id}`,
      { ...patchHeaders(0), 'Tre-Digest': 'not-a-digest' },
      cipher.subarray(0, unitEnd(0, cipher.length)),
    );
    expect([r.status, errCode(r)]).toEqual([400, 'bad_digest']);
    expect(await snapshot()).toBe(before);
    await raw('DELETE', `/files/${id}`, auth('alice'));
  });

  it('discards the upload when the digest does not match', async () => {
    const id = randomBytes(16).toString('hex');
    expect((await create(id, cipher.length)).status).toBe(201);
    const mid = unitEnd(1, cipher.length);
    await raw('PATCH', `/files/${id}`, patchHeaders(0), cipher.subarray(0, mid));
    const tampered = Buffer.from(cipher);
    tampered[mid + 50] = tampered[mid + 50]! ^ 1;
    const r = await raw(
      'PATCH',
      `/files/${id}`,
      { ...patchHeaders(mid), 'Tre-Digest': digestOf(cipher) },
      tampered.subarray(mid),
    );
    expect([r.status, errCode(r)]).toEqual([422, 'digest_mismatch']);
    expect(server.store.upload(id)?.state).toBe('deleted');
    expect(await readdir(join(dir, 'root', 'tus'))).not.toContain(id);
    expect(await readdir(join(dir, 'root', 'projects', 'p1', 'staging'))).not.toContain(id);
  });
});
