import type { Db } from '../db.js';

export interface ProjectKeyRow {
  project_id: string;
  epoch: number;
  kem: string;
  kid: string;
  public_key: string;
  volume_wrapped: string | null;
  previous_wrapped: string | null;
  created_by: string;
  created_at: string;
}

export interface GrantRow {
  id: number;
  project_id: string;
  username: string;
  epoch: number;
  state: 'pending' | 'completed' | 'cancelled';
  created_at: string;
  completed_by: string | null;
  completed_at: string | null;
}

/** Project key pairs per epoch (public part plain, private part only wrapped) and grants. */
export class KeyStore {
  private readonly epochStmt;
  private readonly wrapStmt;

  constructor(private readonly db: Db) {
    this.epochStmt = db.prepare('SELECT * FROM project_keys WHERE project_id = ? AND epoch = ?');
    this.wrapStmt = db.prepare(
      'SELECT wrapped, kek_kid FROM project_key_wraps WHERE project_id = ? AND epoch = ? AND username = ?',
    );
  }

  epoch(projectId: string, epoch: number): ProjectKeyRow | undefined {
    return this.epochStmt.get(projectId, epoch) as ProjectKeyRow | undefined;
  }

  addEpoch(row: ProjectKeyRow): void {
    this.db
      .prepare(
        `INSERT INTO project_keys (project_id, epoch, kem, kid, public_key, volume_wrapped, previous_wrapped, created_by, created_at)
         VALUES (@project_id, @epoch, @kem, @kid, @public_key, @volume_wrapped, @previous_wrapped, @created_by, @created_at)`,
      )
      .run(row);
  }

  wrap(
    projectId: string,
    epoch: number,
    username: string,
  ): { wrapped: string; kek_kid: string } | undefined {
    return this.wrapStmt.get(projectId, epoch, username) as
      { wrapped: string; kek_kid: string } | undefined;
  }

  /** The newest epoch for which `username` holds a wrap of the project private key. */
  newestWrappedEpoch(projectId: string, username: string): number | undefined {
    const r = this.db
      .prepare(
        'SELECT MAX(epoch) AS e FROM project_key_wraps WHERE project_id = ? AND username = ?',
      )
      .get(projectId, username) as { e: number | null };
    return r.e ?? undefined;
  }

  putWrap(
    projectId: string,
    epoch: number,
    username: string,
    kekKid: string,
    wrapped: string,
    by: string,
    now: string,
  ): void {
    this.db
      .prepare(
        `INSERT INTO project_key_wraps (project_id, epoch, username, kek_kid, wrapped, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(project_id, epoch, username) DO UPDATE SET kek_kid = excluded.kek_kid, wrapped = excluded.wrapped, created_by = excluded.created_by, created_at = excluded.created_at`,
      )
      .run(projectId, epoch, username, kekKid, wrapped, by, now);
  }

  deleteWrapsOf(projectId: string, username: string): number {
    return this.db
      .prepare('DELETE FROM project_key_wraps WHERE project_id = ? AND username = ?')
      .run(projectId, username).changes;
  }

  /** Crypto-shredding: every wrapped private key and volume key of the project. */
  shred(projectId: string): number {
    const wraps = this.db
      .prepare('DELETE FROM project_key_wraps WHERE project_id = ?')
      .run(projectId).changes;
    const epochs = this.db
      .prepare(
        'UPDATE project_keys SET volume_wrapped = NULL, previous_wrapped = NULL WHERE project_id = ?',
      )
      .run(projectId).changes;
    return wraps + epochs;
  }

  createGrant(projectId: string, username: string, epoch: number, now: string): number | undefined {
    const r = this.db
      .prepare(
        `INSERT INTO grants (project_id, username, epoch, state, created_at) VALUES (?, ?, ?, 'pending', ?)
         ON CONFLICT DO NOTHING`,
      )
      .run(projectId, username, epoch, now);
    return r.changes ? Number(r.lastInsertRowid) : undefined;
  }

  grant(projectId: string, id: number): GrantRow | undefined {
    return this.db
      .prepare('SELECT * FROM grants WHERE project_id = ? AND id = ?')
      .get(projectId, id) as GrantRow | undefined;
  }

  pendingGrants(projectId: string): GrantRow[] {
    return this.db
      .prepare("SELECT * FROM grants WHERE project_id = ? AND state = 'pending' ORDER BY id")
      .all(projectId) as GrantRow[];
  }

  completeGrant(id: number, by: string, now: string): void {
    this.db
      .prepare(
        "UPDATE grants SET state = 'completed', completed_by = ?, completed_at = ? WHERE id = ?",
      )
      .run(by, now, id);
  }

  /** Cancels pending grants of `username` (all epochs), or of everyone before `beforeEpoch`. */
  cancelGrants(projectId: string, filter: { username?: string; beforeEpoch?: number }): number {
    if (filter.username !== undefined) {
      return this.db
        .prepare(
          "UPDATE grants SET state = 'cancelled' WHERE project_id = ? AND username = ? AND state = 'pending'",
        )
        .run(projectId, filter.username).changes;
    }
    return this.db
      .prepare(
        "UPDATE grants SET state = 'cancelled' WHERE project_id = ? AND epoch < ? AND state = 'pending'",
      )
      .run(projectId, filter.beforeEpoch ?? Number.MAX_SAFE_INTEGER).changes;
  }
}
