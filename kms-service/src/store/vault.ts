import type { Db } from '../db.js';

export interface VaultRow {
  username: string;
  kid: string;
  threshold: number;
  share_count: number;
  created_at: string;
  /** Recovery-authentication public key (raw Ed25519, base64url); null for vaults made before. */
  auth_key: string | null;
}

export interface RecoveryRow {
  id: number;
  username: string;
  recovery_public_key: string;
  state: 'open' | 'ready' | 'cancelled';
  created_at: string;
  requested_at: string | null;
  signature: string | null;
  /** Trustees may approve from this time on (the waiting period). */
  not_before: string | null;
  cancelled_by: string | null;
}

/** Key-recovery vaults: shares wrapped to trustees, recovery requests and trustee approvals. */
export class VaultStore {
  constructor(private readonly db: Db) {}

  get(username: string): VaultRow | undefined {
    return this.db.prepare('SELECT * FROM vaults WHERE username = ?').get(username) as
      VaultRow | undefined;
  }

  /** Replaces the user's vault; open recoveries against the old shares are cancelled. */
  put(
    username: string,
    kid: string,
    threshold: number,
    shares: Array<{ trustee: string; wrapped: string }>,
    authKey: string,
    now: string,
  ): void {
    this.db.prepare('DELETE FROM vault_shares WHERE username = ?').run(username);
    this.db.prepare('DELETE FROM vaults WHERE username = ?').run(username);
    this.db
      .prepare(
        "UPDATE recoveries SET state = 'cancelled' WHERE username = ? AND state != 'cancelled'",
      )
      .run(username);
    this.db
      .prepare(
        'INSERT INTO vaults (username, kid, threshold, share_count, created_at, auth_key) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(username, kid, threshold, shares.length, now, authKey);
    const ins = this.db.prepare(
      'INSERT INTO vault_shares (username, idx, trustee, wrapped) VALUES (?, ?, ?, ?)',
    );
    shares.forEach((s, i) => ins.run(username, i + 1, s.trustee, s.wrapped));
  }

  share(username: string, trustee: string): { idx: number; wrapped: string } | undefined {
    return this.db
      .prepare('SELECT idx, wrapped FROM vault_shares WHERE username = ? AND trustee = ?')
      .get(username, trustee) as { idx: number; wrapped: string } | undefined;
  }

  trustees(username: string): string[] {
    return (
      this.db
        .prepare('SELECT trustee FROM vault_shares WHERE username = ? ORDER BY idx')
        .all(username) as Array<{ trustee: string }>
    ).map((r) => r.trustee);
  }

  openRecovery(
    username: string,
    r: { recoveryPublicKey: string; requestedAt: string; signature: string; notBefore: string },
    now: string,
  ): number {
    this.db
      .prepare(
        "UPDATE recoveries SET state = 'cancelled' WHERE username = ? AND state != 'cancelled'",
      )
      .run(username);
    const res = this.db
      .prepare(
        "INSERT INTO recoveries (username, recovery_public_key, state, created_at, requested_at, signature, not_before) VALUES (?, ?, 'open', ?, ?, ?, ?)",
      )
      .run(username, r.recoveryPublicKey, now, r.requestedAt, r.signature, r.notBefore);
    return Number(res.lastInsertRowid);
  }

  /** A user's recoveries, newest first: what they are shown, so a request they did not make shows. */
  recoveriesOf(username: string, limit = 20): RecoveryRow[] {
    return this.db
      .prepare('SELECT * FROM recoveries WHERE username = ? ORDER BY id DESC LIMIT ?')
      .all(username, limit) as RecoveryRow[];
  }

  cancel(recoveryId: number, by: string): void {
    this.db
      .prepare("UPDATE recoveries SET state = 'cancelled', cancelled_by = ? WHERE id = ?")
      .run(by, recoveryId);
  }

  recovery(id: number): RecoveryRow | undefined {
    return this.db.prepare('SELECT * FROM recoveries WHERE id = ?').get(id) as
      RecoveryRow | undefined;
  }

  /**
   * Open recoveries past their waiting period for which `trustee` holds a share and has not yet
   * approved, with what the trustee needs to check the owner's signature.
   */
  awaiting(
    trustee: string,
    now: string,
  ): Array<RecoveryRow & { share: string; auth_key: string; kid: string }> {
    return this.db
      .prepare(
        `SELECT r.*, s.wrapped AS share, v.auth_key, v.kid FROM recoveries r
         JOIN vault_shares s ON s.username = r.username AND s.trustee = ?
         JOIN vaults v ON v.username = r.username
         WHERE r.state = 'open' AND r.not_before <= ? AND v.auth_key IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM recovery_approvals a WHERE a.recovery_id = r.id AND a.trustee = ?)
         ORDER BY r.id`,
      )
      .all(trustee, now, trustee) as Array<
      RecoveryRow & { share: string; auth_key: string; kid: string }
    >;
  }

  approve(recoveryId: number, trustee: string, wrapped: string, now: string): number {
    this.db
      .prepare(
        'INSERT INTO recovery_approvals (recovery_id, trustee, wrapped, created_at) VALUES (?, ?, ?, ?)',
      )
      .run(recoveryId, trustee, wrapped, now);
    return (
      this.db
        .prepare('SELECT COUNT(*) AS n FROM recovery_approvals WHERE recovery_id = ?')
        .get(recoveryId) as { n: number }
    ).n;
  }

  approvals(recoveryId: number): Array<{ trustee: string; wrapped: string; created_at: string }> {
    return this.db
      .prepare(
        'SELECT trustee, wrapped, created_at FROM recovery_approvals WHERE recovery_id = ? ORDER BY created_at, trustee',
      )
      .all(recoveryId) as Array<{ trustee: string; wrapped: string; created_at: string }>;
  }

  markReady(recoveryId: number): void {
    this.db.prepare("UPDATE recoveries SET state = 'ready' WHERE id = ?").run(recoveryId);
  }
}
