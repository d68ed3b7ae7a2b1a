/**
 * The KMS database: SQLite through better-sqlite3, in WAL mode, with numbered migrations.
 *
 * secure_delete overwrites deleted rows in the file itself, which is what makes closing a project
 * (deleting its wrapped keys) a real crypto-shred rather than a flag on reusable free pages.
 */
import Database from 'better-sqlite3';
import { EGRESS_SCHEMA } from './store/egress.js';

export type Db = Database.Database;

export interface OpenOptions {
  /** 'normal' survives a crash of the process (the WAL is written before a commit returns);
   * 'full' also survives a power loss at the cost of one fsync per transaction. */
  synchronous?: 'normal' | 'full';
  readonly?: boolean;
}

export function openDatabase(path: string, opts: OpenOptions = {}): Db {
  const db = new Database(path, {
    readonly: opts.readonly ?? false,
    fileMustExist: opts.readonly ?? false,
  });
  db.pragma('busy_timeout = 5000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${opts.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma('secure_delete = ON');
  }
  db.pragma('foreign_keys = ON');
  return db;
}

interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'people, projects, keys, files, grants, vault, audit',
    sql: `
CREATE TABLE people (
  username TEXT PRIMARY KEY,
  organisation TEXT NOT NULL,
  email TEXT,
  agreement_version TEXT,
  agreement_accepted_at TEXT,
  trustee INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE kek_keys (
  kid TEXT PRIMARY KEY,
  username TEXT NOT NULL REFERENCES people(username),
  kem TEXT NOT NULL,
  public_key TEXT NOT NULL,
  created_at TEXT NOT NULL,
  retired_at TEXT
);
CREATE INDEX kek_keys_user ON kek_keys(username);
CREATE TABLE key_files (
  username TEXT PRIMARY KEY REFERENCES people(username),
  kid TEXT NOT NULL,
  content TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE trainings (
  username TEXT NOT NULL REFERENCES people(username),
  kind TEXT NOT NULL CHECK (kind IN ('hpc', 'data_awareness', 'tre_rules')),
  completed_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  recorded_by TEXT NOT NULL,
  PRIMARY KEY (username, kind)
);
CREATE TABLE notifications (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL,
  kind TEXT NOT NULL,
  message TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE projects (
  id TEXT PRIMARY KEY,
  title TEXT NOT NULL,
  description TEXT NOT NULL,
  pi TEXT NOT NULL,
  epoch INTEGER NOT NULL DEFAULT 0,
  rotation_due INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  closed_at TEXT
);
CREATE TABLE members (
  project_id TEXT NOT NULL REFERENCES projects(id),
  username TEXT NOT NULL REFERENCES people(username),
  role TEXT NOT NULL CHECK (role IN ('pi', 'researcher', 'data_owner', 'reviewer')),
  valid_from TEXT,
  valid_until TEXT,
  consented_at TEXT,
  added_by TEXT NOT NULL,
  added_at TEXT NOT NULL,
  PRIMARY KEY (project_id, username)
);
CREATE INDEX members_user ON members(username);
CREATE TABLE project_keys (
  project_id TEXT NOT NULL REFERENCES projects(id),
  epoch INTEGER NOT NULL,
  kem TEXT NOT NULL,
  kid TEXT NOT NULL,
  public_key TEXT NOT NULL,
  volume_wrapped TEXT,
  previous_wrapped TEXT,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (project_id, epoch)
);
CREATE TABLE project_key_wraps (
  project_id TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  username TEXT NOT NULL,
  kek_kid TEXT NOT NULL,
  wrapped TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (project_id, epoch, username),
  FOREIGN KEY (project_id, epoch) REFERENCES project_keys(project_id, epoch)
);
CREATE TABLE grants (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id TEXT NOT NULL REFERENCES projects(id),
  username TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'cancelled')),
  created_at TEXT NOT NULL,
  completed_by TEXT,
  completed_at TEXT
);
CREATE UNIQUE INDEX grants_pending ON grants(project_id, username, epoch) WHERE state = 'pending';
CREATE TABLE files (
  file_id TEXT PRIMARY KEY,
  project_id TEXT NOT NULL REFERENCES projects(id),
  epoch INTEGER NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  wrapped TEXT,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX files_project ON files(project_id, file_id);
CREATE TABLE file_recipients (
  file_id TEXT NOT NULL REFERENCES files(file_id),
  username TEXT NOT NULL,
  kek_kid TEXT NOT NULL,
  purpose TEXT NOT NULL,
  wrapped TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (file_id, username)
);
CREATE TABLE vaults (
  username TEXT PRIMARY KEY REFERENCES people(username),
  kid TEXT NOT NULL,
  threshold INTEGER NOT NULL,
  share_count INTEGER NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE vault_shares (
  username TEXT NOT NULL REFERENCES vaults(username),
  idx INTEGER NOT NULL,
  trustee TEXT NOT NULL,
  wrapped TEXT NOT NULL,
  PRIMARY KEY (username, idx),
  UNIQUE (username, trustee)
);
CREATE TABLE recoveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL REFERENCES people(username),
  recovery_public_key TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('open', 'ready', 'cancelled')),
  created_at TEXT NOT NULL
);
CREATE TABLE recovery_approvals (
  recovery_id INTEGER NOT NULL REFERENCES recoveries(id),
  trustee TEXT NOT NULL,
  wrapped TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (recovery_id, trustee)
);
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  object TEXT NOT NULL,
  result TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE audit_checkpoints (
  seq INTEGER PRIMARY KEY,
  hash TEXT NOT NULL,
  time TEXT NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
`,
  },
  { version: 2, name: 'egress requests', sql: EGRESS_SCHEMA },
  {
    version: 3,
    name: 'file states (pending until the ingress confirms)',
    sql: `ALTER TABLE files ADD COLUMN state TEXT NOT NULL DEFAULT 'visible' CHECK (state IN ('pending', 'visible', 'destroyed'));`,
  },
  {
    version: 4,
    name: 'signed recovery requests, waiting period, cancellation',
    // Vaults made before this have no auth key: their owners must store them again to recover;
    // open requests were unsigned and are cancelled.
    sql: `
ALTER TABLE vaults ADD COLUMN auth_key TEXT;
ALTER TABLE recoveries ADD COLUMN requested_at TEXT;
ALTER TABLE recoveries ADD COLUMN signature TEXT;
ALTER TABLE recoveries ADD COLUMN not_before TEXT;
ALTER TABLE recoveries ADD COLUMN cancelled_by TEXT;
UPDATE recoveries SET state = 'cancelled', cancelled_by = 'migration:unsigned' WHERE state = 'open';
`,
  },
  {
    version: 5,
    name: 'console sessions',
    // Keyed by a hash of the session id; the hub token is sealed under a key derived from the
    // id, which only the browser's cookie holds, so the table alone opens nothing.
    sql: `
CREATE TABLE console_sessions (
  id_hash BLOB PRIMARY KEY,
  username TEXT NOT NULL,
  sealed BLOB NOT NULL,
  created_at TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
`,
  },
  {
    version: 6,
    name: 'console session idle time',
    // Sessions from before this have no last use on record: they count as idle and end.
    sql: `
ALTER TABLE console_sessions ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
`,
  },
];

export function schemaVersion(db: Db): number {
  const exists = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
    .get();
  if (!exists) return 0;
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as {
    v: number | null;
  };
  return row.v ?? 0;
}

/** Applies every migration newer than the database, each in its own transaction. */
export function migrate(db: Db): number[] {
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
  );
  const current = schemaVersion(db);
  const latest = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
  if (current > latest) {
    throw new Error(
      `database schema version ${current} is newer than this tre-kms (${latest}); upgrade tre-kms`,
    );
  }
  const applied: number[] = [];
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
        m.version,
        m.name,
        new Date().toISOString(),
      );
    })();
    applied.push(m.version);
  }
  return applied;
}
