import type { Db } from '../db.js';

export interface SessionRow {
  username: string;
  sealed: Buffer;
  expires_at: number;
  last_seen_at: number;
}

/**
 * Console sessions: one row per signed-in browser, found by the SHA-256 of its session id. A
 * session is live until its expiry and while it was used within the idle span.
 */
export class SessionStore {
  private readonly insert;
  private readonly select;
  private readonly seen;
  private readonly remove;
  private readonly purge;

  constructor(
    db: Db,
    private readonly idleMs: number,
  ) {
    this.insert = db.prepare(
      'INSERT INTO console_sessions (id_hash, username, sealed, created_at, expires_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.select = db.prepare(
      'SELECT username, sealed, expires_at, last_seen_at FROM console_sessions WHERE id_hash = ? AND expires_at > ? AND last_seen_at > ?',
    );
    this.seen = db.prepare('UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?');
    this.remove = db.prepare('DELETE FROM console_sessions WHERE id_hash = ?');
    this.purge = db.prepare(
      'DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at <= ?',
    );
  }

  add(idHash: Buffer, username: string, sealed: Buffer, now: Date, expiresAt: number): void {
    this.purgeEnded(now.getTime());
    this.insert.run(idHash, username, sealed, now.toISOString(), expiresAt, now.getTime());
  }

  get(idHash: Buffer, now: number): SessionRow | undefined {
    return this.select.get(idHash, now, now - this.idleMs) as SessionRow | undefined;
  }

  /** Records a use of the session; also the moment ended sessions of others are removed. */
  touch(idHash: Buffer, now: number): void {
    this.seen.run(now, idHash);
    this.purgeEnded(now);
  }

  delete(idHash: Buffer): boolean {
    return this.remove.run(idHash).changes > 0;
  }

  private purgeEnded(now: number): void {
    this.purge.run(now, now - this.idleMs);
  }
}
