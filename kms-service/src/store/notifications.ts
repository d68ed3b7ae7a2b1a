import type { Db } from '../db.js';

export const NOTIFICATION_KINDS = [
  'security_issue',
  'anomaly',
  'too_many_rights',
  'change_of_institute',
] as const;
/** What users file; the KMS itself files `recovery_requested` when a vault recovery opens. */
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number] | 'recovery_requested';

export interface NotificationRow {
  id: number;
  username: string;
  kind: NotificationKind;
  message: string;
  created_at: string;
}

export class NotificationStore {
  constructor(private readonly db: Db) {}

  add(username: string, kind: NotificationKind, message: string, now: string): number {
    const r = this.db
      .prepare(
        'INSERT INTO notifications (username, kind, message, created_at) VALUES (?, ?, ?, ?)',
      )
      .run(username, kind, message, now);
    return Number(r.lastInsertRowid);
  }

  list(afterId: number, limit: number): NotificationRow[] {
    return this.db
      .prepare('SELECT * FROM notifications WHERE id > ? ORDER BY id LIMIT ?')
      .all(afterId, limit) as NotificationRow[];
  }
}
