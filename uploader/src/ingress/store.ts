/**
 * The ingress service's own workflow state (SQLite, WAL): the directory-IV registry of each
 * project tree, ingress requests with their checklists and reviews, uploads and their states,
 * and a hash-chained audit log of everything the service decided.
 */
import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';

export type UploadState = 'uploading' | 'staged' | 'visible' | 'deleted';
export type RequestState = 'open' | 'submitted' | 'confirming' | 'confirmed' | 'rejected';

export interface Checklist {
  pseudonymised: boolean;
  noDirectIdentifiers: boolean;
  legalBasis: string;
  dataMinimisation: boolean;
  note?: string;
}

export interface DirRow {
  project: string;
  path: string;
  parent: string | null;
  entry: string | null;
  long_name: string | null;
  diriv: Buffer;
}

export interface RequestRow {
  id: string;
  project: string;
  username: string;
  state: RequestState;
  checklist: string | null;
  created_at: string;
  submitted_at: string | null;
  reviewer: string | null;
  reviewed_at: string | null;
  reason: string | null;
}

export interface UploadRow {
  id: string;
  project: string;
  request_id: string;
  username: string;
  dir_path: string;
  entry: string;
  long_name: string | null;
  size: number;
  file_id: string;
  state: UploadState;
  digest: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface AuditRow {
  seq: number;
  time: string;
  actor: string;
  action: string;
  object: string;
  result: string;
  prev_hash: string;
  hash: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS dirs (
  project TEXT NOT NULL, path TEXT NOT NULL, parent TEXT, entry TEXT, long_name TEXT,
  diriv BLOB NOT NULL, PRIMARY KEY (project, path));
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY, project TEXT NOT NULL, username TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('open','submitted','confirming','confirmed','rejected')),
  checklist TEXT, created_at TEXT NOT NULL, submitted_at TEXT, reviewer TEXT, reviewed_at TEXT,
  reason TEXT);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, project TEXT NOT NULL, request_id TEXT NOT NULL REFERENCES requests(id),
  username TEXT NOT NULL, dir_path TEXT NOT NULL, entry TEXT NOT NULL, long_name TEXT,
  size INTEGER NOT NULL, file_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('uploading','staged','visible','deleted')),
  digest TEXT, created_at TEXT NOT NULL, completed_at TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS uploads_live_path ON uploads(project, dir_path, entry)
  WHERE state != 'deleted';
CREATE INDEX IF NOT EXISTS uploads_request ON uploads(request_id);
DROP INDEX IF EXISTS uploads_user;
CREATE INDEX IF NOT EXISTS uploads_user_size ON uploads(username, state, size);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  object TEXT NOT NULL, result TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

const GENESIS = '0'.repeat(64);

export function auditHash(prev: string, e: Omit<AuditRow, 'hash' | 'prev_hash'>): string {
  return createHash('sha256')
    .update(JSON.stringify([prev, e.seq, e.time, e.actor, e.action, e.object, e.result]))
    .digest('hex');
}

export class IngressStore {
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  /** One wrapper for every transaction: better-sqlite3 builds five functions per wrapper. */
  private readonly inTx: (fn: () => unknown) => unknown;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('secure_delete = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.inTx = this.db.transaction((fn: () => unknown) => fn());
  }

  close(): void {
    this.db.close();
  }

  /** Statements are compiled once; every upload runs the same few of them. */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  /** The newest audit entry's number (0 if none). */
  lastAuditSeq(): number {
    const r = this.stmt('SELECT max(seq) AS seq FROM audit').get() as { seq: number | null };
    return r.seq ?? 0;
  }

  tx<T>(fn: () => T): T {
    return this.inTx(fn) as T;
  }

  now(): string {
    return new Date().toISOString();
  }

  // ---- directories --------------------------------------------------------------------------

  dir(project: string, path: string): DirRow | undefined {
    return this.stmt('SELECT * FROM dirs WHERE project = ? AND path = ?').get(project, path) as
      DirRow | undefined;
  }

  /** Registers a directory with a fresh IV unless it exists; returns the stored row. */
  ensureDir(
    project: string,
    path: string,
    parent: string | null,
    entry: string | null,
    longName: string | null,
  ): DirRow {
    this.stmt(
      'INSERT OR IGNORE INTO dirs (project, path, parent, entry, long_name, diriv) VALUES (?, ?, ?, ?, ?, ?)',
    ).run(project, path, parent, entry, longName, randomBytes(16));
    return this.dir(project, path)!;
  }

  // ---- requests -----------------------------------------------------------------------------

  createRequest(project: string, username: string): RequestRow {
    const id = randomBytes(12).toString('hex');
    this.stmt(
      "INSERT INTO requests (id, project, username, state, created_at) VALUES (?, ?, ?, 'open', ?)",
    ).run(id, project, username, this.now());
    return this.request(id)!;
  }

  request(id: string): RequestRow | undefined {
    return this.stmt('SELECT * FROM requests WHERE id = ?').get(id) as RequestRow | undefined;
  }

  requests(project: string): RequestRow[] {
    return this.stmt('SELECT * FROM requests WHERE project = ? ORDER BY created_at').all(
      project,
    ) as RequestRow[];
  }

  setRequest(id: string, fields: Partial<Omit<RequestRow, 'id' | 'project' | 'username'>>): void {
    const keys = Object.keys(fields);
    if (keys.length === 0) return;
    this.stmt(
      `UPDATE requests SET ${keys.map((k) => `${k} = @${k}`).join(', ')} WHERE id = @id`,
    ).run({ ...fields, id });
  }

  // ---- uploads ------------------------------------------------------------------------------

  upload(id: string): UploadRow | undefined {
    return this.stmt('SELECT * FROM uploads WHERE id = ?').get(id) as UploadRow | undefined;
  }

  uploadsOf(requestId: string): UploadRow[] {
    return this.stmt('SELECT * FROM uploads WHERE request_id = ? ORDER BY dir_path, entry').all(
      requestId,
    ) as UploadRow[];
  }

  uploadsIn(state: UploadState): UploadRow[] {
    return this.stmt('SELECT * FROM uploads WHERE state = ?').all(state) as UploadRow[];
  }

  livePath(project: string, dirPath: string, entry: string): UploadRow | undefined {
    return this.stmt(
      "SELECT * FROM uploads WHERE project = ? AND dir_path = ? AND entry = ? AND state != 'deleted'",
    ).get(project, dirPath, entry) as UploadRow | undefined;
  }

  /** Bytes a user has stored that are not yet confirmed (uploading or staged). */
  pendingBytes(username: string): number {
    const row = this.stmt(
      "SELECT COALESCE(SUM(size), 0) AS n FROM uploads WHERE username = ? AND state IN ('uploading', 'staged')",
    ).get(username) as { n: number };
    return row.n;
  }

  insertUpload(u: Omit<UploadRow, 'state' | 'digest' | 'created_at' | 'completed_at'>): void {
    this.stmt(
      `INSERT INTO uploads (id, project, request_id, username, dir_path, entry, long_name, size, file_id, state, created_at)
         VALUES (@id, @project, @request_id, @username, @dir_path, @entry, @long_name, @size, @file_id, 'uploading', @created_at)`,
    ).run({ ...u, created_at: this.now() });
  }

  setUpload(id: string, state: UploadState, digest?: string): void {
    this.stmt(
      'UPDATE uploads SET state = ?, digest = COALESCE(?, digest), completed_at = ? WHERE id = ?',
    ).run(state, digest ?? null, this.now(), id);
  }

  // ---- audit --------------------------------------------------------------------------------

  appendAudit(actor: string, action: string, object: string, result = 'ok'): AuditRow {
    return this.tx(() => {
      const last = this.stmt('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1').get() as
        { seq: number; hash: string } | undefined;
      const e = { seq: (last?.seq ?? 0) + 1, time: this.now(), actor, action, object, result };
      const prev = last?.hash ?? GENESIS;
      const row: AuditRow = { ...e, prev_hash: prev, hash: auditHash(prev, e) };
      this.stmt(
        'INSERT INTO audit (seq, time, actor, action, object, result, prev_hash, hash) VALUES (@seq, @time, @actor, @action, @object, @result, @prev_hash, @hash)',
      ).run(row);
      return row;
    });
  }

  /** Audit entries after `seq`, oldest first. */
  auditAfter(seq: number, limit: number): AuditRow[] {
    return this.stmt('SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?').all(
      seq,
      limit,
    ) as AuditRow[];
  }

  meta(key: string): string | undefined {
    const r = this.stmt('SELECT value FROM meta WHERE key = ?').get(key) as
      { value: string } | undefined;
    return r?.value;
  }

  setMeta(key: string, value: string): void {
    this.stmt(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
    ).run(key, value);
  }

  auditLog(): AuditRow[] {
    return this.stmt('SELECT * FROM audit ORDER BY seq').all() as AuditRow[];
  }

  /** Recomputes the chain; returns the first broken sequence number or null. */
  verifyAudit(): number | null {
    let prev = GENESIS;
    for (const r of this.auditLog()) {
      if (r.prev_hash !== prev || auditHash(prev, r) !== r.hash) return r.seq;
      prev = r.hash;
    }
    return null;
  }
}
