/**
 * The ingress service: tus uploads of ciphertext into per-project staging areas, the
 * directory-IV registry the clients encrypt names with, and ingress requests with a four-eyes
 * review that makes confirmed files visible in the project's cipher directory.
 *
 * On disk (all on one filesystem, so every move is a rename or a link):
 *   <root>/tus/<upload id>                 uploads in progress (tus file store)
 *   <root>/projects/<p>/staging/<id>       verified uploads awaiting review
 *   <root>/projects/<p>/cipher/...         the project tree, exactly as gocryptfs lays it out
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { constants as fsc } from 'node:fs';
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  stat,
  unlink,
} from 'node:fs/promises';
import type { Server } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server as TusServer } from '@tus/server';
import { EVENTS } from '@tus/utils';
import { DIRIV_NAME, HEADER_LEN, LONGNAME_SUFFIX, cipherSizeToPlainSize } from '@tre/crypto';
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { checkCipherEntry, checkCipherPath, parseStoredPath } from '../cipher-names.js';
import type { CipherComponent } from '../cipher-names.js';
import { digestOfStream, fileDigest, isBoundary } from '../units.js';
import { AlignedFileStore } from './aligned-file-store.js';
import { DIGEST_HEADER, STATE_HEADER } from './protocol.js';
import { AuthorityUnavailableError } from './authority.js';
import type { EgressManifest, IngressAuthority, KeyOutcome, ProjectRole } from './authority.js';
import { IngressStore } from './store.js';
import type { Checklist, RequestRow, UploadRow } from './store.js';

export interface IngressOptions {
  /** Storage root; uploads, staging and cipher trees live below it, on one filesystem. */
  root: string;
  authority: IngressAuthority;
  logger?: Logger;
  /** Largest accepted ciphertext file, bytes (default 2 TiB). */
  maxFileSize?: number;
  /** Per-user bytes awaiting review (uploading or staged), default 4 TiB. */
  quotaBytes?: number;
  /** Largest accepted PATCH body, bytes (default 64 MiB). */
  maxChunkBytes?: number;
  /** Group that owns project trees (group-only access); the process's own group if unset. */
  groupId?: number;
}

const TIB = 1024 ** 4;
const UPLOAD_ID = /^[0-9a-f]{32}$/;
const FILE_ID = /^[0-9a-f]{32}$/;
const DIGEST = /^[0-9a-f]{64}$/;
const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const DIR_MODE = 0o2750;
const FILE_MODE = 0o640;
const META_MODE = 0o440;
const REVIEWER_ROLES: readonly ProjectRole[] = ['pi', 'data_owner'];

export const OPENAPI_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'openapi',
  'ingress.yaml',
);

/** An error with an HTTP status and a stable code; its message goes to the client. */
export class IngressError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'IngressError';
  }
}

/** tus hooks signal errors by throwing {status_code, body}. */
function tusError(status: number, code: string, message: string): never {
  throw { status_code: status, body: JSON.stringify({ error: { code, message } }) + '\n' };
}

function tokenOf(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  return /^(?:token|bearer)\s+(\S+)\s*$/i.exec(header)?.[1];
}

async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Debris of an interrupted write in a project's staging directory; upload ids never start with a dot. */
const STAGING_TEMP = /^\.tmp-[0-9a-f]{16}$/;

/**
 * Writes a small file under its final name exclusively and never half-written. It is built in
 * the project's staging directory (same filesystem, only the ingress writes there) and linked
 * in, so a crash leaves debris only where the ingress's own recovery sweeps, never in the cipher
 * tree that sessions read and write.
 */
async function writeNewFile(
  stagingDir: string,
  path: string,
  data: Uint8Array | string,
  mode: number,
): Promise<void> {
  const tmp = join(stagingDir, `.tmp-${randomBytes(8).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  } finally {
    await unlink(tmp);
  }
}

/** How a review changed the files' keys, for the audit entry. */
function keyNote(verb: string, k: KeyOutcome): string {
  if (!k.kept) return 'keys:not-kept-by-this-authority';
  return `keys:${verb}:${k.done}` + (k.missing > 0 ? ` keys-unknown:${k.missing}` : '');
}

interface Caller {
  token: string;
  username: string;
}

export class IngressServer {
  readonly app: express.Express;
  readonly tus: TusServer;
  readonly store: IngressStore;
  readonly files: AlignedFileStore;
  readonly log: Logger;
  readonly metrics = new Registry();
  private readonly opts: Required<Omit<IngressOptions, 'groupId' | 'logger'>> & {
    groupId?: number;
  };
  private readonly identities = new Map<string, { username: string; until: number }>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Projects whose directories and root diriv this process has made sure of. */
  private readonly projectsReady = new Set<string>();
  private readonly bytesStaged: Counter;
  private readonly uploadsStaged: Counter;
  private readonly reviews: Counter;
  private readonly rejected: Counter;
  private readonly mirrorStalled: Gauge;
  private readonly mirrorFailures: Counter;
  private http: Server | undefined;
  private mirroring: Promise<void> | undefined;
  private mirrorAgain = false;
  private mirrorRetry: NodeJS.Timeout | undefined;
  private closing = false;

  private constructor(opts: IngressOptions) {
    this.opts = {
      root: opts.root,
      authority: opts.authority,
      maxFileSize: opts.maxFileSize ?? 2 * TIB,
      quotaBytes: opts.quotaBytes ?? 4 * TIB,
      maxChunkBytes: opts.maxChunkBytes ?? 64 * 1024 * 1024,
      ...(opts.groupId !== undefined ? { groupId: opts.groupId } : {}),
    };
    this.log = opts.logger ?? pino({ name: 'tre-ingress' }, pino.destination(2));
    this.store = new IngressStore(join(opts.root, 'ingress.sqlite'));
    this.files = new AlignedFileStore({ directory: join(opts.root, 'tus') });
    collectDefaultMetrics({ register: this.metrics });
    this.bytesStaged = new Counter({
      name: 'tre_ingress_bytes_staged_total',
      help: 'Ciphertext bytes of verified uploads moved to staging',
      registers: [this.metrics],
    });
    this.uploadsStaged = new Counter({
      name: 'tre_ingress_uploads_staged_total',
      help: 'Verified uploads moved to staging',
      registers: [this.metrics],
    });
    this.reviews = new Counter({
      name: 'tre_ingress_reviews_total',
      help: 'Ingress request reviews by decision',
      labelNames: ['decision'],
      registers: [this.metrics],
    });
    this.rejected = new Counter({
      name: 'tre_ingress_refused_total',
      help: 'Refused requests by reason code',
      labelNames: ['code'],
      registers: [this.metrics],
    });
    const store = this.store;
    const mirrors = (): boolean => this.opts.authority.appendAudit !== undefined;
    new Gauge({
      name: 'tre_ingress_audit_mirror_backlog',
      help: 'Local audit entries not yet copied into the KMS audit log (0 without a KMS)',
      registers: [this.metrics],
      collect() {
        this.set(
          mirrors() ? store.lastAuditSeq() - Number(store.meta('audit_mirrored') ?? '0') : 0,
        );
      },
    });
    this.mirrorStalled = new Gauge({
      name: 'tre_ingress_audit_mirror_stalled',
      help: '1 while the last attempt to copy audit entries into the KMS failed (the cursor waits)',
      registers: [this.metrics],
    });
    this.mirrorFailures = new Counter({
      name: 'tre_ingress_audit_mirror_failures_total',
      help: 'Audit batches the KMS refused or did not answer',
      registers: [this.metrics],
    });
    this.tus = this.createTus();
    this.app = this.createApp();
  }

  static async create(opts: IngressOptions): Promise<IngressServer> {
    await mkdir(join(opts.root, 'tus'), { recursive: true, mode: 0o700 });
    await mkdir(join(opts.root, 'projects'), { recursive: true, mode: 0o711 });
    const s = new IngressServer(opts);
    await s.recover();
    s.mirrorAudit();
    return s;
  }

  listen(port: number, host = '127.0.0.1'): Promise<number> {
    return new Promise((resolve, reject) => {
      const srv = this.app.listen(port, host, (err?: Error) => {
        if (err) reject(err);
        else {
          const addr = srv.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        }
      });
      this.http = srv;
    });
  }

  async close(): Promise<void> {
    await this.auditMirrored().catch(() => undefined);
    this.closing = true;
    clearTimeout(this.mirrorRetry);
    const srv = this.http;
    if (srv) {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
    await this.files.close();
    this.store.close();
  }

  // ---- identity -----------------------------------------------------------------------------

  private async caller(header: string | null | undefined): Promise<Caller> {
    const token = tokenOf(header);
    if (!token)
      throw new IngressError(401, 'unauthorized', 'send Authorization: token <hub token>');
    const cached = this.identities.get(token);
    if (cached && cached.until > Date.now()) return { token, username: cached.username };
    const username = await this.opts.authority.identify(token);
    if (!username) throw new IngressError(401, 'unauthorized', 'the token is not known');
    if (this.identities.size > 10_000) this.identities.clear();
    this.identities.set(token, { username, until: Date.now() + 30_000 });
    return { token, username };
  }

  private async requireRole(
    c: Caller,
    project: string,
    roles: readonly ProjectRole[],
  ): Promise<ProjectRole> {
    if (!PROJECT_ID.test(project)) {
      throw new IngressError(400, 'bad_project', 'project ids are 1-64 letters, digits, _ . -');
    }
    const role = await this.opts.authority.roleOf(c.token, c.username, project);
    if (!role || !roles.includes(role)) {
      throw new IngressError(
        403,
        'forbidden',
        `${c.username} needs the role ${roles.join(' or ')} in project ${project}`,
      );
    }
    return role;
  }

  private audit(actor: string, action: string, object: string, result = 'ok'): void {
    this.store.appendAudit(actor, action, object, result);
    this.log.info({ actor, action, object, result }, 'audit');
    this.mirrorAudit();
  }

  /**
   * Copies the local audit log into the central one (the KMS) in order, in batches, from a
   * cursor kept in the database: entries written while the KMS is away follow when it is back,
   * also after a restart. The local hash-chained log stays the service's own record.
   */
  private mirrorAudit(): void {
    const append = this.opts.authority.appendAudit?.bind(this.opts.authority);
    if (!append || this.closing) return;
    if (this.mirroring) {
      this.mirrorAgain = true;
      return;
    }
    this.mirroring = (async () => {
      do {
        this.mirrorAgain = false;
        for (;;) {
          const after = Number(this.store.meta('audit_mirrored') ?? '0');
          const rows = this.store.auditAfter(after, 500);
          if (rows.length === 0) break;
          await append(
            rows.map((r) => ({
              action: r.action,
              object: r.object,
              result: r.result,
              user: r.actor,
            })),
          );
          this.store.setMeta('audit_mirrored', String(rows[rows.length - 1]!.seq));
        }
      } while (this.mirrorAgain && !this.closing);
      this.mirrorStalled.set(0);
    })()
      .catch((e: unknown) => {
        this.mirrorStalled.set(1);
        this.mirrorFailures.inc();
        this.log.warn({ err: (e as Error).message }, 'audit mirror to the KMS failed; retrying');
        if (!this.closing && !this.mirrorRetry) {
          this.mirrorRetry = setTimeout(() => {
            this.mirrorRetry = undefined;
            this.mirrorAudit();
          }, 5000);
          this.mirrorRetry.unref();
        }
      })
      .finally(() => {
        this.mirroring = undefined;
      });
  }

  /** Resolves when every audit entry written so far has reached the KMS (tests, shutdown). */
  async auditMirrored(): Promise<void> {
    while (this.mirroring) await this.mirroring;
  }

  /** Serialises work on one key (an upload or a request) within this process. */
  private async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(fn);
    this.locks.set(key, run);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === run) this.locks.delete(key);
    }
  }

  // ---- paths --------------------------------------------------------------------------------

  private projectDir(project: string): string {
    return join(this.opts.root, 'projects', project);
  }

  private stagingPath(u: UploadRow): string {
    return join(this.projectDir(u.project), 'staging', u.id);
  }

  private cipherDirPath(project: string, dirKey: string): string {
    const base = join(this.projectDir(project), 'cipher');
    return dirKey === '' ? base : join(base, ...dirKey.split('/'));
  }

  private async ownDir(path: string): Promise<void> {
    if (this.opts.groupId !== undefined)
      await chown(path, process.getuid?.() ?? 0, this.opts.groupId);
    await chmod(path, DIR_MODE);
  }

  /** Creates the project's directories and its root diriv on first use. */
  private async initProject(project: string): Promise<void> {
    if (this.projectsReady.has(project)) return;
    const root = this.store.ensureDir(project, '', null, null, null);
    const pdir = this.projectDir(project);
    for (const d of [pdir, join(pdir, 'staging'), join(pdir, 'cipher')]) {
      if (!(await exists(d))) {
        await mkdir(d, { recursive: true });
        await this.ownDir(d);
      }
    }
    const iv = join(pdir, 'cipher', DIRIV_NAME);
    if (!(await exists(iv))) await writeNewFile(join(pdir, 'staging'), iv, root.diriv, META_MODE);
    this.projectsReady.add(project);
  }

  // ---- tus ----------------------------------------------------------------------------------

  private createTus(): TusServer {
    const tus = new TusServer({
      path: '/files',
      datastore: this.files,
      relativeLocation: true,
      maxSize: this.opts.maxFileSize,
      namingFunction: (_req, metadata) => {
        const id = metadata?.uploadId;
        if (typeof id !== 'string' || !UPLOAD_ID.test(id)) {
          tusError(400, 'bad_metadata', 'metadata uploadId must be 32 lowercase hex digits');
        }
        return id;
      },
      onIncomingRequest: async (req, id) => {
        try {
          await this.checkTusRequest(req, id);
        } catch (e) {
          this.refuse(e);
        }
      },
      onUploadCreate: async (req, upload) => {
        try {
          await this.checkTusCreate(req, upload.id, upload.size, upload.metadata ?? {});
        } catch (e) {
          this.refuse(e);
        }
        return {};
      },
      // The last chunk may carry the client's digest: then it is verified and staged in the
      // same request, and the answer says so (a client that gets no such answer calls /complete).
      onUploadFinish: async (req, upload) => {
        const digest = req.headers.get(DIGEST_HEADER);
        if (digest === null) return {};
        try {
          const c = await this.caller(req.headers.get('authorization'));
          const u = await this.exclusive(`upload:${upload.id}`, () =>
            this.finishUpload(c.username, upload.id, digest),
          );
          return { headers: { [STATE_HEADER]: u.state } };
        } catch (e) {
          this.refuse(e);
        }
      },
    });
    tus.on(EVENTS.POST_TERMINATE, (_req, _res, id: string) => {
      const u = this.store.upload(id);
      if (u && u.state === 'uploading') {
        this.store.setUpload(id, 'deleted');
        this.audit(u.username, 'upload.terminate', `project:${u.project} upload:${id}`);
      }
    });
    return tus;
  }

  private refuse(e: unknown): never {
    if (e instanceof IngressError) {
      this.rejected.inc({ code: e.code });
      tusError(e.status, e.code, e.message);
    }
    throw e;
  }

  private checkChunk(req: { headers: Headers }, start: number, size: number): void {
    const len = req.headers.get('content-length');
    if (len === null) {
      if (req.headers.get('transfer-encoding')) {
        throw new IngressError(411, 'length_required', 'chunks need a Content-Length');
      }
      return;
    }
    const n = Number(len);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new IngressError(400, 'bad_length', 'invalid Content-Length');
    }
    if (n > this.opts.maxChunkBytes) {
      throw new IngressError(
        413,
        'chunk_too_large',
        `a chunk may carry at most ${this.opts.maxChunkBytes} bytes`,
      );
    }
    if (start + n > size) {
      throw new IngressError(
        413,
        'beyond_length',
        `the chunk ends after the declared ${size} bytes`,
      );
    }
    if (n > 0 && !isBoundary(start + n, size)) {
      throw new IngressError(
        400,
        'unaligned_chunk',
        'a chunk must end at a resume-unit boundary (256 ciphertext blocks) or at the file end',
      );
    }
  }

  private async checkTusRequest(
    req: { method: string; headers: Headers },
    id: string,
  ): Promise<void> {
    if (req.method === 'GET') {
      throw new IngressError(405, 'not_allowed', 'uploads cannot be read back');
    }
    const c = await this.caller(req.headers.get('authorization'));
    const digest = req.headers.get(DIGEST_HEADER);
    if (digest !== null && !DIGEST.test(digest)) {
      throw new IngressError(400, 'bad_digest', `${DIGEST_HEADER} must be 64 lowercase hex digits`);
    }
    if (req.method === 'POST') return;
    const u = this.store.upload(id);
    if (!u || u.username !== c.username) {
      throw new IngressError(404, 'not_found', `no upload ${id} of ${c.username}`);
    }
    if (u.state !== 'uploading') {
      throw new IngressError(409, 'not_uploading', `upload ${id} is ${u.state}`);
    }
    if (req.method === 'PATCH') {
      const off = Number(req.headers.get('upload-offset'));
      if (!Number.isSafeInteger(off) || !isBoundary(off, u.size)) {
        throw new IngressError(409, 'bad_offset', 'Upload-Offset must be a resume-unit boundary');
      }
      this.checkChunk(req, off, u.size);
    }
  }

  private async checkTusCreate(
    req: { headers: Headers },
    id: string,
    size: number | undefined,
    meta: Record<string, string | null>,
  ): Promise<void> {
    const c = await this.caller(req.headers.get('authorization'));
    const str = (k: string): string => {
      const v = meta[k];
      if (typeof v !== 'string' || v === '') {
        throw new IngressError(400, 'bad_metadata', `metadata ${k} is required`);
      }
      return v;
    };
    const project = str('project');
    await this.requireRole(c, project, ['data_owner']);
    const requestId = str('request');
    const r = this.store.request(requestId);
    if (!r || r.project !== project || r.username !== c.username) {
      throw new IngressError(
        404,
        'no_request',
        `no open request ${requestId} of yours in ${project}`,
      );
    }
    if (r.state !== 'open') {
      throw new IngressError(409, 'request_closed', `request ${requestId} is ${r.state}`);
    }
    if (size === undefined) {
      throw new IngressError(400, 'length_required', 'deferred lengths are not accepted');
    }
    try {
      cipherSizeToPlainSize(size);
    } catch {
      throw new IngressError(
        400,
        'bad_size',
        `${size} bytes is not a possible gocryptfs file size`,
      );
    }
    const fileId = str('fileId');
    if (!FILE_ID.test(fileId)) {
      throw new IngressError(
        400,
        'bad_metadata',
        'metadata fileId must be 32 lowercase hex digits',
      );
    }
    const dirKey = meta.dir ?? '';
    if (!this.store.dir(project, dirKey)) {
      throw new IngressError(404, 'no_dir', 'register the target directory first');
    }
    const entry = str('entry');
    const longName = meta.longName ?? undefined;
    try {
      checkCipherEntry(entry, longName === null ? undefined : longName);
    } catch (e) {
      throw new IngressError(400, 'bad_name', (e as Error).message);
    }
    this.checkChunk(req, 0, size);
    const had = this.store.upload(id);
    if (had) {
      // A create that crashed half-way may be repeated by its owner; anything else is a replay.
      if (had.username !== c.username || had.state !== 'uploading' || (await this.tusHas(id))) {
        throw new IngressError(409, 'upload_exists', `upload ${id} already exists`);
      }
      return;
    }
    const dirHere = dirKey === '' ? entry : `${dirKey}/${entry}`;
    this.store.tx(() => {
      if (this.store.upload(id)) {
        throw new IngressError(409, 'upload_exists', `upload ${id} already exists`);
      }
      if (this.store.livePath(project, dirKey, entry) || this.store.dir(project, dirHere)) {
        throw new IngressError(409, 'path_exists', 'a file or directory of that name exists');
      }
      if (this.store.pendingBytes(c.username) + size > this.opts.quotaBytes) {
        throw new IngressError(
          413,
          'quota_exceeded',
          `${c.username} may keep at most ${this.opts.quotaBytes} bytes awaiting review`,
        );
      }
      this.store.insertUpload({
        id,
        project,
        request_id: requestId,
        username: c.username,
        dir_path: dirKey,
        entry,
        long_name: longName ?? null,
        size,
        file_id: fileId,
      });
      // In the same transaction: one commit per created upload.
      this.audit(
        c.username,
        'upload.create',
        `project:${project} request:${requestId} upload:${id} size:${size}`,
      );
    });
  }

  private async tusHas(id: string): Promise<boolean> {
    try {
      await this.files.getUpload(id);
      return true;
    } catch {
      return false;
    }
  }

  // ---- completion ---------------------------------------------------------------------------

  /** Verifies a finished upload against the client's digest and moves it to staging. */
  async complete(c: Caller, id: string, digest: string): Promise<UploadRow> {
    return this.exclusive(`upload:${id}`, () => this.finishUpload(c.username, id, digest));
  }

  /**
   * The digest check and staging of complete(), run under the upload's lock: by the
   * /complete call, or by the last chunk's request when it carries the digest.
   */
  private async finishUpload(username: string, id: string, digest: string): Promise<UploadRow> {
    const u = this.store.upload(id);
    if (!u || u.username !== username) {
      throw new IngressError(404, 'not_found', `no upload ${id} of ${username}`);
    }
    if (u.state === 'staged' || u.state === 'visible') {
      if (u.digest !== digest) {
        throw new IngressError(422, 'digest_mismatch', 'the stored file has a different digest');
      }
      return u;
    }
    if (u.state !== 'uploading') {
      throw new IngressError(409, 'not_uploading', `upload ${id} is ${u.state}`);
    }
    let offset: number;
    try {
      offset = (await this.files.getUpload(id)).offset;
    } catch {
      throw new IngressError(409, 'incomplete', `upload ${id} has no data yet`);
    }
    if (offset !== u.size) {
      throw new IngressError(409, 'incomplete', `upload ${id} has ${offset} of ${u.size} bytes`);
    }
    const src = this.files.pathOf(id);
    const actual = await this.digestFile(src, u);
    if (actual !== digest) {
      await rm(src, { force: true });
      await this.files.forget(id);
      this.store.setUpload(id, 'deleted');
      this.audit(username, 'upload.verify', `project:${u.project} upload:${id}`, 'digest_mismatch');
      throw new IngressError(
        422,
        'digest_mismatch',
        'the stored ciphertext does not match the digest; the upload was discarded, send it again',
      );
    }
    await this.stage(u, src, actual, () =>
      this.audit(username, 'upload.complete', `project:${u.project} upload:${id} digest:${actual}`),
    );
    return this.store.upload(id)!;
  }

  /** The stored file's digest: from the hashes taken while it was written, else read back. */
  private async digestFile(path: string, u: UploadRow): Promise<string> {
    const seen = this.files.written(u.id, u.size);
    if (seen) {
      if (u.size > 0 && !this.headerMatches(seen.head, u)) return 'bad-header';
      return fileDigest(u.size, seen.units);
    }
    if (u.size > 0) {
      const fh = await open(path, 'r');
      try {
        const head = Buffer.alloc(HEADER_LEN);
        await fh.read(head, 0, HEADER_LEN, 0);
        if (!this.headerMatches(head, u)) return 'bad-header';
      } finally {
        await fh.close();
      }
    }
    return digestOfStream(u.size, createReadStream(path, { highWaterMark: 1 << 20 }));
  }

  private headerMatches(head: Buffer, u: UploadRow): boolean {
    return (
      head.length === HEADER_LEN &&
      head.readUInt16BE(0) === 2 &&
      head.subarray(2).toString('hex') === u.file_id
    );
  }

  /** Moves a verified upload to staging; `andThen` runs in the transaction that records it. */
  private async stage(
    u: UploadRow,
    src: string,
    digest: string,
    andThen: () => void,
  ): Promise<void> {
    await this.initProject(u.project);
    const dst = this.stagingPath(u);
    await chmod(src, FILE_MODE);
    await fsyncPath(src);
    await rename(src, dst);
    await fsyncPath(dirname(dst)).catch(() => undefined);
    await this.files.forget(u.id);
    this.store.tx(() => {
      this.store.setUpload(u.id, 'staged', digest);
      andThen();
    });
    this.bytesStaged.inc(u.size);
    this.uploadsStaged.inc();
  }

  /** After a crash: finish moves that happened on disk but not in the database, drop debris. */
  private async recover(): Promise<void> {
    for (const u of this.store.uploadsIn('uploading')) {
      const staged = this.stagingPath(u);
      if (await exists(staged)) {
        const digest = await this.digestFile(staged, u);
        this.store.setUpload(u.id, 'staged', digest);
        await this.files.forget(u.id);
      }
    }
    for (const u of this.store.uploadsIn('deleted')) {
      await rm(this.files.pathOf(u.id), { force: true });
      await this.files.forget(u.id);
      await rm(this.stagingPath(u), { force: true });
    }
    const projects = await readdir(join(this.opts.root, 'projects')).catch(() => []);
    for (const project of projects) {
      const staging = join(this.projectDir(project), 'staging');
      const entries = await readdir(staging).catch(() => []);
      for (const e of entries.filter((n) => STAGING_TEMP.test(n))) {
        await rm(join(staging, e), { recursive: true, force: true });
      }
    }
  }

  // ---- directories --------------------------------------------------------------------------

  async registerDir(c: Caller, project: string, path: CipherComponent[]): Promise<Buffer[]> {
    await this.requireRole(c, project, ['data_owner']);
    try {
      checkCipherPath(path, 'path');
    } catch (e) {
      throw new IngressError(400, 'bad_name', (e as Error).message);
    }
    await this.initProject(project);
    return this.store.tx(() => {
      const ivs = [this.store.dir(project, '')!.diriv];
      let parent = '';
      for (const comp of path) {
        const key = parent === '' ? comp.entry : `${parent}/${comp.entry}`;
        if (!this.store.dir(project, key) && this.store.livePath(project, parent, comp.entry)) {
          throw new IngressError(409, 'path_exists', 'a file of that name exists');
        }
        ivs.push(
          this.store.ensureDir(project, key, parent, comp.entry, comp.longName ?? null).diriv,
        );
        parent = key;
      }
      return ivs;
    });
  }

  // ---- requests -----------------------------------------------------------------------------

  private requestView(r: RequestRow) {
    return {
      id: r.id,
      project: r.project,
      uploader: r.username,
      state: r.state,
      checklist: r.checklist ? (JSON.parse(r.checklist) as Checklist) : null,
      createdAt: r.created_at,
      submittedAt: r.submitted_at,
      reviewer: r.reviewer,
      reviewedAt: r.reviewed_at,
      reason: r.reason,
      files: this.store.uploadsOf(r.id).map((u) => ({
        uploadId: u.id,
        fileId: u.file_id,
        path: u.dir_path === '' ? u.entry : `${u.dir_path}/${u.entry}`,
        size: u.size,
        state: u.state,
        digest: u.digest,
      })),
    };
  }

  private ownRequest(c: Caller, id: string): RequestRow {
    const r = this.store.request(id);
    if (!r || r.username !== c.username) {
      throw new IngressError(404, 'not_found', `no request ${id} of ${c.username}`);
    }
    return r;
  }

  private async visibleRequest(c: Caller, id: string): Promise<RequestRow> {
    const r = this.store.request(id);
    if (!r) throw new IngressError(404, 'not_found', `no request ${id}`);
    if (r.username !== c.username) await this.requireRole(c, r.project, REVIEWER_ROLES);
    return r;
  }

  async submit(c: Caller, id: string, checklist: Checklist) {
    return this.exclusive(`request:${id}`, async () => {
      const r = this.ownRequest(c, id);
      if (r.state !== 'open') {
        throw new IngressError(409, 'not_open', `request ${id} is ${r.state}`);
      }
      const missing = (
        ['pseudonymised', 'noDirectIdentifiers', 'dataMinimisation'] as const
      ).filter((k) => checklist[k] !== true);
      if (missing.length > 0 || checklist.legalBasis.trim() === '') {
        throw new IngressError(
          422,
          'checklist_incomplete',
          `the checklist needs ${[...missing, ...(checklist.legalBasis.trim() ? [] : ['legalBasis'])].join(', ')}`,
        );
      }
      const files = this.store.uploadsOf(id).filter((u) => u.state !== 'deleted');
      if (files.length === 0) throw new IngressError(409, 'empty', 'the request has no files');
      const unfinished = files.filter((u) => u.state !== 'staged');
      if (unfinished.length > 0) {
        throw new IngressError(409, 'incomplete', `${unfinished.length} files are still uploading`);
      }
      this.store.setRequest(id, {
        state: 'submitted',
        checklist: JSON.stringify(checklist),
        submitted_at: this.store.now(),
      });
      this.audit(
        c.username,
        'ingress.submit',
        `project:${r.project} request:${id} files:${files.length}`,
      );
      return this.requestView(this.store.request(id)!);
    });
  }

  async review(c: Caller, id: string, decision: 'confirm' | 'reject', reason?: string) {
    return this.exclusive(`request:${id}`, async () => {
      const r = this.store.request(id);
      if (!r) throw new IngressError(404, 'not_found', `no request ${id}`);
      await this.requireRole(c, r.project, REVIEWER_ROLES);
      if (r.username === c.username) {
        this.audit(
          c.username,
          `ingress.${decision}`,
          `project:${r.project} request:${id}`,
          'denied:four_eyes',
        );
        throw new IngressError(403, 'four_eyes', 'the uploader cannot review their own request');
      }
      const resuming =
        r.state === 'confirming' && decision === 'confirm' && r.reviewer === c.username;
      if (r.state !== 'submitted' && !resuming) {
        throw new IngressError(409, 'not_submitted', `request ${id} is ${r.state}`);
      }
      const files = this.store.uploadsOf(id).filter((u) => u.state === 'staged');
      if (decision === 'reject') {
        // Keys first: if the KMS fails, nothing has changed yet and the reviewer tries again.
        const keys = await this.opts.authority.destroyFileKeys(
          r.project,
          files.map((u) => u.file_id),
        );
        for (const u of files) {
          await rm(this.stagingPath(u), { force: true });
          this.store.setUpload(u.id, 'deleted');
        }
        this.store.setRequest(id, {
          state: 'rejected',
          reviewer: c.username,
          reviewed_at: this.store.now(),
          reason: reason ?? null,
        });
        this.audit(
          c.username,
          'ingress.reject',
          `project:${r.project} request:${id} files:${files.length} ${keyNote('destroyed', keys)}`,
        );
      } else {
        this.store.setRequest(id, { state: 'confirming', reviewer: c.username });
        for (const u of files) await this.publish(u);
        // Files published by an interrupted earlier attempt are confirmed too (idempotent).
        const keys = await this.opts.authority.confirmFileKeys(
          r.project,
          this.store
            .uploadsOf(id)
            .filter((u) => u.state === 'visible')
            .map((u) => u.file_id),
        );
        this.store.setRequest(id, {
          state: 'confirmed',
          reviewed_at: this.store.now(),
          reason: reason ?? null,
        });
        this.audit(
          c.username,
          'ingress.confirm',
          `project:${r.project} request:${id} files:${files.length} ${keyNote('confirmed', keys)}`,
        );
      }
      this.reviews.inc({ decision });
      return this.requestView(this.store.request(id)!);
    });
  }

  /** Creates the file's directories, then links the file in: it appears whole or not at all. */
  private async publish(u: UploadRow): Promise<void> {
    const keys = u.dir_path === '' ? [] : u.dir_path.split('/');
    const staging = join(this.projectDir(u.project), 'staging');
    let key = '';
    for (const part of keys) {
      const parentPath = this.cipherDirPath(u.project, key);
      key = key === '' ? part : `${key}/${part}`;
      const d = this.store.dir(u.project, key)!;
      const path = this.cipherDirPath(u.project, key);
      if (d.long_name) {
        await writeNewFile(
          staging,
          join(parentPath, part + LONGNAME_SUFFIX),
          d.long_name,
          META_MODE,
        );
      }
      if (!(await exists(join(path, DIRIV_NAME)))) {
        // Build the directory complete with its diriv under a temporary name, then rename it.
        const tmp = join(staging, `.tmp-${randomBytes(8).toString('hex')}`);
        await mkdir(tmp);
        await this.ownDir(tmp);
        await writeNewFile(staging, join(tmp, DIRIV_NAME), d.diriv, META_MODE);
        await rename(tmp, path);
        await fsyncPath(parentPath).catch(() => undefined);
      }
    }
    const dir = this.cipherDirPath(u.project, u.dir_path);
    if (u.long_name)
      await writeNewFile(staging, join(dir, u.entry + LONGNAME_SUFFIX), u.long_name, META_MODE);
    const target = join(dir, u.entry);
    const staged = this.stagingPath(u);
    if (await exists(staged)) {
      try {
        await link(staged, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      await unlink(staged);
      await fsyncPath(dir).catch(() => undefined);
    }
    this.store.setUpload(u.id, 'visible');
  }

  // ---- egress downloads ---------------------------------------------------------------------

  /**
   * The manifest of a released egress request of the caller's. The KMS decides (asked with the
   * caller's token on every call, so a revocation stops the next request at once).
   */
  private async releasedEgress(c: Caller, project: string, id: number): Promise<EgressManifest> {
    if (!PROJECT_ID.test(project)) {
      throw new IngressError(400, 'bad_project', 'project ids are 1-64 letters, digits, _ . -');
    }
    const m = await this.opts.authority.egress(c.token, project, id);
    const object = `project:${project} egress:${id}`;
    if (!m) {
      this.audit(c.username, 'egress.fetch', object, 'denied:not_found');
      throw new IngressError(404, 'not_found', `no egress request ${id} in ${project} for you`);
    }
    if (m.requester !== c.username) {
      this.audit(c.username, 'egress.fetch', object, 'denied:not_requester');
      throw new IngressError(403, 'not_requester', 'only the requester downloads a release');
    }
    if (m.state === 'revoked') {
      this.audit(c.username, 'egress.fetch', object, 'denied:revoked');
      throw new IngressError(410, 'revoked', `egress request ${id} was revoked`);
    }
    if (m.state !== 'released') {
      this.audit(c.username, 'egress.fetch', object, `denied:${m.state}`);
      throw new IngressError(409, 'not_released', `egress request ${id} is ${m.state}`);
    }
    return m;
  }

  /** Resolves a stored cipher path below the project tree, refusing anything but directories. */
  private async cipherDirOf(project: string, dir: string): Promise<string> {
    let parts: string[];
    try {
      parts = parseStoredPath(dir);
    } catch (e) {
      throw new IngressError(400, 'bad_name', (e as Error).message);
    }
    let path = join(this.projectDir(project), 'cipher');
    for (const part of ['', ...parts]) {
      if (part !== '') path = join(path, part);
      const st = await lstat(path).catch(() => undefined);
      if (!st?.isDirectory()) {
        throw new IngressError(404, 'not_found', 'no such directory in the project tree');
      }
    }
    return path;
  }

  async egressDiriv(c: Caller, project: string, id: number, dir: string): Promise<Buffer> {
    await this.releasedEgress(c, project, id);
    const path = join(await this.cipherDirOf(project, dir), DIRIV_NAME);
    let fh;
    try {
      fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch {
      throw new IngressError(404, 'not_found', 'the directory has no gocryptfs.diriv');
    }
    try {
      const iv = Buffer.alloc(17);
      const { bytesRead } = await fh.read(iv, 0, 17, 0);
      if (bytesRead !== 16) throw new IngressError(500, 'bad_diriv', 'a diriv is not 16 bytes');
      return iv.subarray(0, 16);
    } finally {
      await fh.close();
    }
  }

  /**
   * Streams one file of a released request. The file must be the one filed: its header carries
   * the filed file ID and its size is the manifest's. The client checks its SHA-256.
   */
  async egressFile(
    c: Caller,
    project: string,
    id: number,
    fileId: string,
    cipherPath: string,
    res: Response,
  ): Promise<void> {
    const m = await this.releasedEgress(c, project, id);
    const f = m.files.find((x) => x.fileId === fileId.toLowerCase());
    if (!f)
      throw new IngressError(404, 'not_in_manifest', `file ${fileId} is not in request ${id}`);
    const slash = cipherPath.lastIndexOf('/');
    const dir = await this.cipherDirOf(project, slash < 0 ? '' : cipherPath.slice(0, slash));
    const entry = slash < 0 ? cipherPath : cipherPath.slice(slash + 1);
    try {
      parseStoredPath(entry);
    } catch (e) {
      throw new IngressError(400, 'bad_name', (e as Error).message);
    }
    let fh;
    try {
      fh = await open(join(dir, entry), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch {
      throw new IngressError(404, 'not_found', 'no such file in the project tree');
    }
    const object = `project:${project} egress:${id} file:${f.fileId}`;
    try {
      const st = await fh.stat();
      const head = Buffer.alloc(HEADER_LEN);
      if (st.isFile() && st.size >= HEADER_LEN) await fh.read(head, 0, HEADER_LEN, 0);
      if (!st.isFile() || st.size !== f.size || head.subarray(2).toString('hex') !== f.fileId) {
        this.audit(c.username, 'egress.fetch', object, 'denied:changed');
        throw new IngressError(
          409,
          'changed',
          'the file in the project tree is not the one filed (file ID or size differ)',
        );
      }
    } catch (e) {
      await fh.close();
      throw e;
    }
    this.audit(c.username, 'egress.fetch', object);
    res.status(200);
    res.setHeader('Content-Type', 'application/octet-stream');
    res.setHeader('Content-Length', String(f.size));
    res.setHeader('Cache-Control', 'no-store');
    const stream = fh.createReadStream({ highWaterMark: 1 << 20 });
    await new Promise<void>((resolve) => {
      stream.on('error', () => {
        res.destroy();
        resolve();
      });
      res.on('close', () => {
        stream.destroy();
        resolve();
      });
      stream.pipe(res);
    });
  }

  // ---- HTTP ---------------------------------------------------------------------------------

  private createApp(): express.Express {
    const app = express();
    app.disable('x-powered-by');
    app.use((req, res, next) => {
      const t0 = process.hrtime.bigint();
      res.on('finish', () => {
        // Every chunk is a request: successful ones at debug, so the log does not cost a
        // synchronous write per chunk (the audit log records what was decided).
        this.log[res.statusCode < 400 ? 'debug' : 'info'](
          {
            method: req.method,
            path: req.path,
            status: res.statusCode,
            ms: Number(process.hrtime.bigint() - t0) / 1e6,
          },
          'request',
        );
      });
      next();
    });
    app.get('/healthz', (_req, res) => {
      res.json({ status: 'ok' });
    });
    app.get('/metrics', async (_req, res) => {
      res.type(this.metrics.contentType).send(await this.metrics.metrics());
    });
    app.all(['/files', '/files/*rest'], (req, res) => {
      this.tus.handle(req, res).catch((e: unknown) => {
        this.log.error({ err: e }, 'tus handler failed');
        if (!res.headersSent) res.status(500).end();
      });
    });
    app.use(express.json({ limit: '256kb' }));
    app.use(
      OpenApiValidator.middleware({
        apiSpec: OPENAPI_PATH,
        validateRequests: { allowUnknownQueryParameters: false },
        validateResponses: false,
        ignoreUndocumented: false,
        ignorePaths: /^\/(healthz|metrics|files)/,
        // Checking the spec itself against the OpenAPI schema took seconds of CPU at every
        // start; openapi.test.ts checks it once instead.
        validateApiSpec: false,
      }),
    );
    const h =
      (fn: (c: Caller, req: Request) => Promise<{ status?: number; body: unknown }>) =>
      (req: Request, res: Response, next: NextFunction) => {
        this.caller(req.headers.authorization)
          .then((c) => fn(c, req))
          .then((out) => res.status(out.status ?? 200).json(out.body))
          .catch(next);
      };
    const p = (req: Request, name: string): string => String(req.params[name]);

    app.post(
      '/v1/projects/:project/dirs',
      h(async (c, req) => {
        const ivs = await this.registerDir(c, p(req, 'project'), req.body.path);
        return { body: { dirivs: ivs.map((iv) => iv.toString('base64url')) } };
      }),
    );
    app.post(
      '/v1/projects/:project/ingress-requests',
      h(async (c, req) => {
        const project = p(req, 'project');
        await this.requireRole(c, project, ['data_owner']);
        const r = this.store.createRequest(project, c.username);
        this.audit(c.username, 'ingress.open', `project:${project} request:${r.id}`);
        return { status: 201, body: this.requestView(r) };
      }),
    );
    app.get(
      '/v1/projects/:project/ingress-requests',
      h(async (c, req) => {
        const project = p(req, 'project');
        await this.requireRole(c, project, ['data_owner', 'pi']);
        return { body: this.store.requests(project).map((r) => this.requestView(r)) };
      }),
    );
    app.get(
      '/v1/ingress-requests/:id',
      h(async (c, req) => ({ body: this.requestView(await this.visibleRequest(c, p(req, 'id'))) })),
    );
    app.post(
      '/v1/ingress-requests/:id/submit',
      h(async (c, req) => ({ body: await this.submit(c, p(req, 'id'), req.body.checklist) })),
    );
    app.post(
      '/v1/ingress-requests/:id/review',
      h(async (c, req) => ({
        body: await this.review(c, p(req, 'id'), req.body.decision, req.body.reason),
      })),
    );
    app.post(
      '/v1/uploads/:id/complete',
      h(async (c, req) => {
        const u = await this.complete(c, p(req, 'id'), req.body.digest);
        return { body: { uploadId: u.id, state: u.state, digest: u.digest, size: u.size } };
      }),
    );
    app.get(
      '/v1/projects/:project/egress/:request/diriv',
      h(async (c, req) => {
        const iv = await this.egressDiriv(
          c,
          p(req, 'project'),
          Number(p(req, 'request')),
          String(req.query.dir ?? ''),
        );
        return { body: { diriv: iv.toString('base64url') } };
      }),
    );
    app.get(
      '/v1/projects/:project/egress/:request/files/:fileId',
      (req: Request, res: Response, next: NextFunction) => {
        this.caller(req.headers.authorization)
          .then((c) =>
            this.egressFile(
              c,
              p(req, 'project'),
              Number(p(req, 'request')),
              p(req, 'fileId'),
              String(req.query.path),
              res,
            ),
          )
          .catch(next);
      },
    );
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
      const e = err as { status?: number; message?: string; code?: string };
      if (err instanceof AuthorityUnavailableError) {
        res.status(503).json({ error: { code: 'kms_unavailable', message: err.message } });
        return;
      }
      if (err instanceof IngressError) {
        this.rejected.inc({ code: err.code });
        res.status(err.status).json({ error: { code: err.code, message: err.message } });
        return;
      }
      if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
        res
          .status(e.status)
          .json({ error: { code: 'bad_request', message: e.message ?? 'bad request' } });
        return;
      }
      this.log.error({ err }, 'internal error');
      res.status(500).json({ error: { code: 'internal', message: 'internal error' } });
    });
    return app;
  }
}
