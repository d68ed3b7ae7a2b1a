import type { Db } from '../db.js';
import type { PersonFacts, TrainingKind } from '../policy.js';

export interface PersonRow {
  username: string;
  organisation: string;
  email: string | null;
  agreement_version: string | null;
  agreement_accepted_at: string | null;
  trustee: number;
  created_at: string;
  updated_at: string;
}

export interface TrainingRow {
  kind: TrainingKind;
  completed_at: string;
  expires_at: string;
  recorded_by: string;
}

export interface KekRow {
  kid: string;
  username: string;
  kem: string;
  public_key: string;
  created_at: string;
  retired_at: string | null;
}

export class PeopleStore {
  private readonly getStmt;
  private readonly trainingsStmt;
  private readonly currentKekStmt;
  private readonly factsStmt;

  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM people WHERE username = ?');
    this.trainingsStmt = db.prepare(
      'SELECT kind, completed_at, expires_at, recorded_by FROM trainings WHERE username = ? ORDER BY kind',
    );
    this.currentKekStmt = db.prepare(
      'SELECT * FROM kek_keys WHERE username = ? AND retired_at IS NULL ORDER BY created_at DESC, rowid DESC LIMIT 1',
    );
    // The policy's view of a person in one query: one row per training (or one row without).
    this.factsStmt = db.prepare(
      'SELECT p.agreement_version, p.trustee, t.kind, t.expires_at FROM people p LEFT JOIN trainings t ON t.username = p.username WHERE p.username = ? ORDER BY t.kind',
    );
  }

  get(username: string): PersonRow | undefined {
    return this.getStmt.get(username) as PersonRow | undefined;
  }

  trainings(username: string): TrainingRow[] {
    return this.trainingsStmt.all(username) as TrainingRow[];
  }

  facts(username: string): PersonFacts | undefined {
    const rows = this.factsStmt.all(username) as Array<{
      agreement_version: string | null;
      trustee: number;
      kind: TrainingKind | null;
      expires_at: string | null;
    }>;
    const p = rows[0];
    if (!p) return undefined;
    const trainings: Array<{ kind: TrainingKind; expiresAt: string }> = [];
    for (const r of rows)
      if (r.kind !== null) trainings.push({ kind: r.kind, expiresAt: r.expires_at! });
    return { agreementVersion: p.agreement_version, trustee: p.trustee === 1, trainings };
  }

  upsert(username: string, organisation: string, email: string | null, now: string): boolean {
    const existed = this.get(username) !== undefined;
    this.db
      .prepare(
        `INSERT INTO people (username, organisation, email, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(username) DO UPDATE SET organisation = excluded.organisation, email = excluded.email, updated_at = excluded.updated_at`,
      )
      .run(username, organisation, email, now, now);
    return !existed;
  }

  acceptAgreement(username: string, version: string, now: string): void {
    this.db
      .prepare(
        'UPDATE people SET agreement_version = ?, agreement_accepted_at = ?, updated_at = ? WHERE username = ?',
      )
      .run(version, now, now, username);
  }

  setTrustee(username: string, trustee: boolean, now: string): void {
    this.db
      .prepare('UPDATE people SET trustee = ?, updated_at = ? WHERE username = ?')
      .run(trustee ? 1 : 0, now, username);
  }

  recordTraining(
    username: string,
    kind: TrainingKind,
    completedAt: string,
    expiresAt: string,
    recordedBy: string,
  ): void {
    this.db
      .prepare(
        `INSERT INTO trainings (username, kind, completed_at, expires_at, recorded_by) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(username, kind) DO UPDATE SET completed_at = excluded.completed_at, expires_at = excluded.expires_at, recorded_by = excluded.recorded_by`,
      )
      .run(username, kind, completedAt, expiresAt, recordedBy);
  }

  currentKek(username: string): KekRow | undefined {
    return this.currentKekStmt.get(username) as KekRow | undefined;
  }

  keks(username: string): KekRow[] {
    return this.db
      .prepare('SELECT * FROM kek_keys WHERE username = ? ORDER BY created_at, rowid')
      .all(username) as KekRow[];
  }

  kek(kid: string): KekRow | undefined {
    return this.db.prepare('SELECT * FROM kek_keys WHERE kid = ?').get(kid) as KekRow | undefined;
  }

  /** A new KEK becomes current; the previous ones are retired, not deleted. */
  addKek(username: string, kid: string, kem: string, publicKey: string, now: string): void {
    this.db
      .prepare('UPDATE kek_keys SET retired_at = ? WHERE username = ? AND retired_at IS NULL')
      .run(now, username);
    this.db
      .prepare(
        'INSERT INTO kek_keys (kid, username, kem, public_key, created_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run(kid, username, kem, publicKey, now);
  }

  putKeyFile(username: string, kid: string, content: string, now: string): void {
    this.db
      .prepare(
        `INSERT INTO key_files (username, kid, content, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(username) DO UPDATE SET kid = excluded.kid, content = excluded.content, updated_at = excluded.updated_at`,
      )
      .run(username, kid, content, now);
  }

  keyFile(username: string): { kid: string; content: string; updated_at: string } | undefined {
    return this.db
      .prepare('SELECT kid, content, updated_at FROM key_files WHERE username = ?')
      .get(username) as { kid: string; content: string; updated_at: string } | undefined;
  }
}
