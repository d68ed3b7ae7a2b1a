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
  private readonly accessStmt;

  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM projects WHERE id = ?');
    this.memberStmt = db.prepare('SELECT * FROM members WHERE project_id = ? AND username = ?');
    this.consentStmt = db.prepare(
      "SELECT COUNT(*) AS owners, COUNT(consented_at) AS consented FROM members WHERE project_id = ? AND role = 'data_owner'",
    );
    this.accessStmt = db.prepare(
      `SELECT p.*, m.username AS m_username, m.role AS m_role, m.valid_from AS m_valid_from,
              m.valid_until AS m_valid_until, m.consented_at AS m_consented_at,
              m.added_by AS m_added_by, m.added_at AS m_added_at,
              (SELECT COUNT(*) FROM members o WHERE o.project_id = p.id AND o.role = 'data_owner') AS owners,
              (SELECT COUNT(o.consented_at) FROM members o WHERE o.project_id = p.id AND o.role = 'data_owner') AS owners_consented
       FROM projects p LEFT JOIN members m ON m.project_id = p.id AND m.username = ?
       WHERE p.id = ?`,
    );
  }

  /**
   * A project, one person's membership of it and whether it is consented, in one query: what
   * the policy needs for every project-scoped request.
   */
  access(
    projectId: string,
    username: string | undefined,
  ): { project: ProjectRow; member?: MemberRow; consented: boolean } | undefined {
    const r = this.accessStmt.get(username ?? null, projectId) as
      | (ProjectRow & {
          m_username: string | null;
          m_role: Role;
          m_valid_from: string | null;
          m_valid_until: string | null;
          m_consented_at: string | null;
          m_added_by: string;
          m_added_at: string;
          owners: number;
          owners_consented: number;
        })
      | undefined;
    if (!r) return undefined;
    const project: ProjectRow = {
      id: r.id,
      title: r.title,
      description: r.description,
      pi: r.pi,
      epoch: r.epoch,
      rotation_due: r.rotation_due,
      created_at: r.created_at,
      closed_at: r.closed_at,
    };
    const consented = r.owners > 0 && r.owners === r.owners_consented;
    if (r.m_username === null) return { project, consented };
    return {
      project,
      consented,
      member: {
        project_id: r.id,
        username: r.m_username,
        role: r.m_role,
        valid_from: r.m_valid_from,
        valid_until: r.m_valid_until,
        consented_at: r.m_consented_at,
        added_by: r.m_added_by,
        added_at: r.m_added_at,
      },
    };
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

  /** Every membership of `username`, with its project, in project id order. */
  membershipsOf(username: string): Array<{ project: ProjectRow; member: MemberRow }> {
    const rows = this.db
      .prepare(
        'SELECT m.*, p.title, p.description, p.pi, p.epoch, p.rotation_due, p.created_at, p.closed_at FROM members m JOIN projects p ON p.id = m.project_id WHERE m.username = ? ORDER BY p.id',
      )
      .all(username) as Array<MemberRow & Omit<ProjectRow, 'id'>>;
    return rows.map((r) => ({
      project: {
        id: r.project_id,
        title: r.title,
        description: r.description,
        pi: r.pi,
        epoch: r.epoch,
        rotation_due: r.rotation_due,
        created_at: r.created_at,
        closed_at: r.closed_at,
      },
      member: {
        project_id: r.project_id,
        username: r.username,
        role: r.role,
        valid_from: r.valid_from,
        valid_until: r.valid_until,
        consented_at: r.consented_at,
        added_by: r.added_by,
        added_at: r.added_at,
      },
    }));
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
