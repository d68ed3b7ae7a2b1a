import type { Db } from '../db.js';

export interface FileRow {
  file_id: string;
  project_id: string;
  epoch: number;
  size: number;
  sha256: string;
  wrapped: string | null;
  /** pending: staged by the ingress, no key released until confirmed; destroyed: key shredded. */
  state: 'pending' | 'visible' | 'destroyed';
  created_by: string;
  created_at: string;
}

/** Files and their wrapped DEKs: to the project key, and to extra recipients for review. */
export class FileStore {
  private readonly getStmt;
  private readonly insertStmt;
  private readonly pageStmt;
  private readonly recipientStmt;

  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM files WHERE file_id = ?');
    this.insertStmt = db.prepare(
      'INSERT INTO files (file_id, project_id, epoch, size, sha256, wrapped, state, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.pageStmt = db.prepare(
      "SELECT file_id, epoch, wrapped FROM files WHERE project_id = ? AND file_id > ? AND wrapped IS NOT NULL AND state = 'visible' ORDER BY file_id LIMIT ?",
    );
    this.recipientStmt = db.prepare(
      'SELECT wrapped, kek_kid, purpose FROM file_recipients WHERE file_id = ? AND username = ?',
    );
  }

  get(fileId: string): FileRow | undefined {
    return this.getStmt.get(fileId) as FileRow | undefined;
  }

  insert(
    f: Omit<FileRow, 'project_id' | 'created_by' | 'created_at' | 'state'> & {
      state?: 'pending' | 'visible';
    },
    projectId: string,
    by: string,
    now: string,
  ): void {
    this.insertStmt.run(
      f.file_id,
      projectId,
      f.epoch,
      f.size,
      f.sha256,
      f.wrapped,
      f.state ?? 'visible',
      by,
      now,
    );
  }

  confirm(fileId: string): void {
    this.db.prepare("UPDATE files SET state = 'visible' WHERE file_id = ?").run(fileId);
  }

  /** Shreds one file's wrapped DEKs (project key and extra recipients); the metadata stays. */
  destroy(fileId: string): number {
    const r = this.db.prepare('DELETE FROM file_recipients WHERE file_id = ?').run(fileId).changes;
    const f = this.db
      .prepare("UPDATE files SET wrapped = NULL, state = 'destroyed' WHERE file_id = ?")
      .run(fileId).changes;
    return r + f;
  }

  countWrapped(projectId: string): number {
    return (
      this.db
        .prepare(
          "SELECT COUNT(*) AS n FROM files WHERE project_id = ? AND wrapped IS NOT NULL AND state = 'visible'",
        )
        .get(projectId) as { n: number }
    ).n;
  }

  /** One page of wrapped DEKs after `afterFileId`, in file id order (keyset pagination). */
  page(
    projectId: string,
    afterFileId: string,
    limit: number,
  ): Array<{ file_id: string; epoch: number; wrapped: string }> {
    return this.pageStmt.all(projectId, afterFileId, limit) as Array<{
      file_id: string;
      epoch: number;
      wrapped: string;
    }>;
  }

  addRecipient(
    fileId: string,
    username: string,
    kekKid: string,
    purpose: string,
    wrapped: string,
    by: string,
    now: string,
  ): void {
    this.db
      .prepare(
        `INSERT INTO file_recipients (file_id, username, kek_kid, purpose, wrapped, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(file_id, username) DO UPDATE SET kek_kid = excluded.kek_kid, purpose = excluded.purpose, wrapped = excluded.wrapped, created_by = excluded.created_by, created_at = excluded.created_at`,
      )
      .run(fileId, username, kekKid, purpose, wrapped, by, now);
  }

  recipient(
    fileId: string,
    username: string,
  ): { wrapped: string; kek_kid: string; purpose: string } | undefined {
    return this.recipientStmt.get(fileId, username) as
      { wrapped: string; kek_kid: string; purpose: string } | undefined;
  }

  deleteRecipientsOf(projectId: string, username: string): number {
    return this.db
      .prepare(
        'DELETE FROM file_recipients WHERE username = ? AND file_id IN (SELECT file_id FROM files WHERE project_id = ?)',
      )
      .run(username, projectId).changes;
  }

  /** Crypto-shredding of a project's files: every wrapped DEK goes, the metadata stays. */
  shred(projectId: string): number {
    const r = this.db
      .prepare(
        'DELETE FROM file_recipients WHERE file_id IN (SELECT file_id FROM files WHERE project_id = ?)',
      )
      .run(projectId).changes;
    const f = this.db
      .prepare('UPDATE files SET wrapped = NULL WHERE project_id = ? AND wrapped IS NOT NULL')
      .run(projectId).changes;
    return r + f;
  }
}
