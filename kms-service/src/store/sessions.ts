import type { Db } from '../db.js';

export interface SessionRow {
  username: string;
  sealed: Buffer;
  expires_at: number;
}

/** Console sessions: one row per signed-in browser, found by the SHA-256 of its session id. */
export class SessionStore {
  private readonly insert;
  private readonly select;
  private readonly remove;
  private readonly purge;

  constructor(db: Db) {
    this.insert = db.prepare(
      'INSERT INTO console_sessions (id_hash, username, sealed, created_at, expires_at) VALUES (?, ?, ?, ?, ?)',
    );
    this.select = db.prepare(
      'SELECT username, sealed, expires_at FROM console_sessions WHERE id_hash = ? AND expires_at > ?',
    );
    this.remove = db.prepare('DELETE FROM console_sessions WHERE id_hash = ?');
    this.purge = db.prepare('DELETE FROM console_sessions WHERE expires_at <= ?');
  }

  add(idHash: Buffer, username: string, sealed: Buffer, now: Date, expiresAt: number): void {
    this.purge.run(now.getTime());
    this.insert.run(idHash, username, sealed, now.toISOString(), expiresAt);
  }

  get(idHash: Buffer, now: number): SessionRow | undefined {
    return this.select.get(idHash, now) as SessionRow | undefined;
  }

  delete(idHash: Buffer): boolean {
    return this.remove.run(idHash).changes > 0;
  }
}
