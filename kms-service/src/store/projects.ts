import type { Db } from '../db.js';
import type { Role } from '../policy.js';

export interface ProjectRow {
  id: string;
  title: string;
  description: string;
  pi: string;
  epoch: number;
  rotation_due: number;
  created_at: string;
  closed_at: string | null;
}

export interface MemberRow {
  project_id: string;
  username: string;
  role: Role;
  valid_from: string | null;
  valid_until: string | null;
  consented_at: string | null;
  added_by: string;
  added_at: string;
}

/** Projects and their members (including each data owner's consent). */
export class ProjectStore {
  private readonly getStmt;
  private readonly memberStmt;
  private readonly consentStmt;

  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM projects WHERE id = ?');
    this.memberStmt = db.prepare('SELECT * FROM members WHERE project_id = ? AND username = ?');
    this.consentStmt = db.prepare(
      "SELECT COUNT(*) AS owners, COUNT(consented_at) AS consented FROM members WHERE project_id = ? AND role = 'data_owner'",
    );
  }

  get(id: string): ProjectRow | undefined {
    return this.getStmt.get(id) as ProjectRow | undefined;
  }

  /** Consented means at least one data owner, and every data owner has consented. */
  consented(id: string): boolean {
    const r = this.consentStmt.get(id) as { owners: number; consented: number };
    return r.owners > 0 && r.owners === r.consented;
  }

  member(projectId: string, username: string): MemberRow | undefined {
    return this.memberStmt.get(projectId, username) as MemberRow | undefined;
  }

  members(projectId: string): MemberRow[] {
    return this.db
      .prepare('SELECT * FROM members WHERE project_id = ? ORDER BY added_at, username')
      .all(projectId) as MemberRow[];
  }

  create(id: string, title: string, description: string, pi: string, now: string): void {
    this.db
      .prepare(
        'INSERT INTO projects (id, title, description, pi, created_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run(id, title, description, pi, now);
  }

  addMember(m: Omit<MemberRow, 'consented_at'>): void {
    this.db
      .prepare(
        'INSERT INTO members (project_id, username, role, valid_from, valid_until, added_by, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      )
      .run(m.project_id, m.username, m.role, m.valid_from, m.valid_until, m.added_by, m.added_at);
  }

  removeMember(projectId: string, username: string): void {
    this.db
      .prepare('DELETE FROM members WHERE project_id = ? AND username = ?')
      .run(projectId, username);
  }

  consent(projectId: string, username: string, now: string): void {
    this.db
      .prepare('UPDATE members SET consented_at = ? WHERE project_id = ? AND username = ?')
      .run(now, projectId, username);
  }

  setEpoch(projectId: string, epoch: number): void {
    this.db
      .prepare('UPDATE projects SET epoch = ?, rotation_due = 0 WHERE id = ?')
      .run(epoch, projectId);
  }

  markRotationDue(projectId: string): void {
    this.db.prepare('UPDATE projects SET rotation_due = 1 WHERE id = ?').run(projectId);
  }

  close(projectId: string, now: string): void {
    this.db.prepare('UPDATE projects SET closed_at = ? WHERE id = ?').run(now, projectId);
  }
}
