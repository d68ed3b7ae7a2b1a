import type { Db } from '../db.js';
import type { EgressState } from '../policy.js';

export const EGRESS_SCHEMA = `
CREATE TABLE egress_requests (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id TEXT NOT NULL REFERENCES projects(id),
  requester TEXT NOT NULL,
  title TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('draft', 'submitted', 'returned', 'partially_reviewed',
    'reviewed', 'approved', 'rejected', 'withdrawn', 'released', 'revoked')),
  round INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX egress_requests_project ON egress_requests(project_id, id);
CREATE TABLE egress_files (
  request_id INTEGER NOT NULL REFERENCES egress_requests(id),
  file_id TEXT NOT NULL,
  path TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  sdc TEXT NOT NULL,
  PRIMARY KEY (request_id, file_id),
  UNIQUE (request_id, path)
);
CREATE TABLE egress_file_keys (
  request_id INTEGER NOT NULL,
  file_id TEXT NOT NULL,
  username TEXT NOT NULL,
  kek_kid TEXT NOT NULL,
  wrapped TEXT NOT NULL,
  PRIMARY KEY (request_id, file_id, username),
  FOREIGN KEY (request_id, file_id) REFERENCES egress_files(request_id, file_id) ON DELETE CASCADE
);
CREATE TABLE egress_votes (
  request_id INTEGER NOT NULL REFERENCES egress_requests(id),
  round INTEGER NOT NULL,
  file_id TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  role TEXT NOT NULL,
  vote TEXT NOT NULL CHECK (vote IN ('approve', 'request_changes')),
  created_at TEXT NOT NULL,
  PRIMARY KEY (request_id, round, file_id, reviewer)
);
CREATE TABLE egress_comments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id INTEGER NOT NULL REFERENCES egress_requests(id),
  round INTEGER NOT NULL,
  file_id TEXT,
  author TEXT NOT NULL,
  visibility TEXT NOT NULL CHECK (visibility IN ('reviewers', 'requester')),
  text TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE egress_justifications (
  request_id INTEGER NOT NULL REFERENCES egress_requests(id),
  file_id TEXT NOT NULL,
  cell TEXT NOT NULL,
  rule TEXT NOT NULL,
  text TEXT NOT NULL,
  author TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (request_id, file_id, cell, rule)
);
`;

export interface EgressRow {
  id: number;
  project_id: string;
  requester: string;
  title: string;
  state: EgressState;
  round: number;
  created_at: string;
  updated_at: string;
}

export interface EgressFileRow {
  request_id: number;
  file_id: string;
  path: string;
  size: number;
  sha256: string;
  sdc: string;
}

export interface VoteRow {
  file_id: string;
  reviewer: string;
  role: string;
  vote: 'approve' | 'request_changes';
  created_at: string;
}

export interface CommentRow {
  id: number;
  round: number;
  file_id: string | null;
  author: string;
  visibility: 'reviewers' | 'requester';
  text: string;
  created_at: string;
}

export interface JustificationRow {
  file_id: string;
  cell: string;
  rule: string;
  text: string;
  author: string;
  created_at: string;
}

/** Egress requests, their frozen manifests, wrapped DEKs, votes, comments and justifications. */
export class EgressStore {
  constructor(private readonly db: Db) {}

  create(projectId: string, requester: string, title: string, now: string): number {
    return Number(
      this.db
        .prepare(
          "INSERT INTO egress_requests (project_id, requester, title, state, round, created_at, updated_at) VALUES (?, ?, ?, 'draft', 0, ?, ?)",
        )
        .run(projectId, requester, title, now, now).lastInsertRowid,
    );
  }

  get(id: number): EgressRow | undefined {
    return this.db.prepare('SELECT * FROM egress_requests WHERE id = ?').get(id) as
      EgressRow | undefined;
  }

  list(projectId: string): EgressRow[] {
    return this.db
      .prepare('SELECT * FROM egress_requests WHERE project_id = ? ORDER BY id')
      .all(projectId) as EgressRow[];
  }

  setState(id: number, state: EgressState, now: string, newRound = false): void {
    this.db
      .prepare(
        `UPDATE egress_requests SET state = ?, updated_at = ?${newRound ? ', round = round + 1' : ''} WHERE id = ?`,
      )
      .run(state, now, id);
  }

  /** Replaces the manifest; keys and justifications of dropped files go with them. */
  replaceFiles(
    id: number,
    files: ReadonlyArray<{
      fileId: string;
      path: string;
      size: number;
      sha256: string;
      sdc: string;
      keys: ReadonlyArray<{ username: string; kid: string; wrapped: string }>;
    }>,
  ): void {
    this.db.prepare('DELETE FROM egress_file_keys WHERE request_id = ?').run(id);
    this.db.prepare('DELETE FROM egress_files WHERE request_id = ?').run(id);
    const keep = new Set(files.map((f) => f.fileId));
    for (const j of this.justifications(id)) {
      if (!keep.has(j.file_id)) {
        this.db
          .prepare('DELETE FROM egress_justifications WHERE request_id = ? AND file_id = ?')
          .run(id, j.file_id);
      }
    }
    const insFile = this.db.prepare(
      'INSERT INTO egress_files (request_id, file_id, path, size, sha256, sdc) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const insKey = this.db.prepare(
      'INSERT INTO egress_file_keys (request_id, file_id, username, kek_kid, wrapped) VALUES (?, ?, ?, ?, ?)',
    );
    for (const f of files) {
      insFile.run(id, f.fileId, f.path, f.size, f.sha256, f.sdc);
      for (const k of f.keys) insKey.run(id, f.fileId, k.username, k.kid, k.wrapped);
    }
  }

  files(id: number): EgressFileRow[] {
    return this.db
      .prepare('SELECT * FROM egress_files WHERE request_id = ? ORDER BY path')
      .all(id) as EgressFileRow[];
  }

  /** username -> kid of the wraps held for one file. */
  keyHolders(id: number, fileId: string): Map<string, string> {
    const rows = this.db
      .prepare(
        'SELECT username, kek_kid FROM egress_file_keys WHERE request_id = ? AND file_id = ?',
      )
      .all(id, fileId) as Array<{ username: string; kek_kid: string }>;
    return new Map(rows.map((r) => [r.username, r.kek_kid]));
  }

  key(
    id: number,
    fileId: string,
    username: string,
  ): { wrapped: string; kek_kid: string } | undefined {
    return this.db
      .prepare(
        'SELECT wrapped, kek_kid FROM egress_file_keys WHERE request_id = ? AND file_id = ? AND username = ?',
      )
      .get(id, fileId, username) as { wrapped: string; kek_kid: string } | undefined;
  }

  /** Crypto-shred of a request's keys (revocation, withdrawal). */
  deleteKeys(id: number): number {
    return this.db.prepare('DELETE FROM egress_file_keys WHERE request_id = ?').run(id).changes;
  }

  /** A removed member's wraps in every request of the project. */
  deleteKeysOf(projectId: string, username: string): number {
    return this.db
      .prepare(
        'DELETE FROM egress_file_keys WHERE username = ? AND request_id IN (SELECT id FROM egress_requests WHERE project_id = ?)',
      )
      .run(username, projectId).changes;
  }

  /** Closing a project: every wrapped DEK of every request goes. */
  shred(projectId: string): number {
    return this.db
      .prepare(
        'DELETE FROM egress_file_keys WHERE request_id IN (SELECT id FROM egress_requests WHERE project_id = ?)',
      )
      .run(projectId).changes;
  }

  vote(
    id: number,
    round: number,
    fileId: string,
    reviewer: string,
    role: string,
    vote: 'approve' | 'request_changes',
    now: string,
  ): void {
    this.db
      .prepare(
        `INSERT INTO egress_votes (request_id, round, file_id, reviewer, role, vote, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(request_id, round, file_id, reviewer) DO UPDATE SET vote = excluded.vote, role = excluded.role, created_at = excluded.created_at`,
      )
      .run(id, round, fileId, reviewer, role, vote, now);
  }

  votes(id: number, round: number): VoteRow[] {
    return this.db
      .prepare(
        'SELECT file_id, reviewer, role, vote, created_at FROM egress_votes WHERE request_id = ? AND round = ? ORDER BY reviewer, file_id',
      )
      .all(id, round) as VoteRow[];
  }

  comment(
    id: number,
    round: number,
    fileId: string | null,
    author: string,
    visibility: 'reviewers' | 'requester',
    text: string,
    now: string,
  ): number {
    return Number(
      this.db
        .prepare(
          'INSERT INTO egress_comments (request_id, round, file_id, author, visibility, text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
        )
        .run(id, round, fileId, author, visibility, text, now).lastInsertRowid,
    );
  }

  comments(id: number): CommentRow[] {
    return this.db
      .prepare(
        'SELECT id, round, file_id, author, visibility, text, created_at FROM egress_comments WHERE request_id = ? ORDER BY id',
      )
      .all(id) as CommentRow[];
  }

  justify(
    id: number,
    fileId: string,
    cell: string,
    rule: string,
    text: string,
    author: string,
    now: string,
  ): void {
    this.db
      .prepare(
        `INSERT INTO egress_justifications (request_id, file_id, cell, rule, text, author, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(request_id, file_id, cell, rule) DO UPDATE SET text = excluded.text, author = excluded.author, created_at = excluded.created_at`,
      )
      .run(id, fileId, cell, rule, text, author, now);
  }

  justifications(id: number): JustificationRow[] {
    return this.db
      .prepare(
        'SELECT file_id, cell, rule, text, author, created_at FROM egress_justifications WHERE request_id = ? ORDER BY file_id, cell, rule',
      )
      .all(id) as JustificationRow[];
  }
}
