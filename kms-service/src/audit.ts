/**
 * Tamper-evident audit log: an append-only SHA-256 hash chain with Ed25519-signed checkpoints.
 *
 * Each entry's hash covers its own fields and the previous entry's hash, so changing, dropping,
 * reordering or inserting an entry breaks the chain at that point. A verifier that pins the
 * signing public key also catches a rewritten chain: the attacker cannot re-sign checkpoints.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as edSign,
  verify as edVerify,
  type KeyObject,
} from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { Db } from './db.js';

export interface AuditEvent {
  actor: string;
  action: string;
  object: string;
  result: string;
}

export interface AuditEntry extends AuditEvent {
  seq: number;
  time: string;
  prev_hash: string;
  hash: string;
}

export interface Checkpoint {
  seq: number;
  hash: string;
  time: string;
  key_id: string;
  signature: string;
}

export const GENESIS_HASH = '0'.repeat(64);
export const EXPORT_FORMAT = 'tre-audit/v1';

/** The hash input is a JSON array: unambiguous field boundaries, stable order. */
export function entryHash(e: Omit<AuditEntry, 'hash'>): string {
  const canonical = JSON.stringify([
    e.seq,
    e.time,
    e.actor,
    e.action,
    e.object,
    e.result,
    e.prev_hash,
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

function checkpointMessage(seq: number, hash: string, time: string): Buffer {
  return Buffer.from(`tre-audit-checkpoint/v1\0${seq}\0${hash}\0${time}`);
}

export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64url');
}

/** The checkpoint signing key: Ed25519, PKCS#8 PEM in a 0600 file, created on first use. */
export class AuditSigner {
  readonly publicKey: KeyObject;
  readonly keyId: string;
  private readonly privateKey: KeyObject;

  private constructor(privateKey: KeyObject) {
    this.privateKey = privateKey;
    this.publicKey = createPublicKey(privateKey);
    this.keyId = keyIdOf(this.publicKey);
  }

  static generate(): AuditSigner {
    return new AuditSigner(generateKeyPairSync('ed25519').privateKey);
  }

  /** Loads the key at `path`, or creates it (and `<path>.pub`) if the file does not exist. */
  static loadOrCreate(path: string): AuditSigner {
    if (existsSync(path)) {
      const mode = statSync(path).mode & 0o777;
      if (mode & 0o077) {
        throw new Error(`audit signing key ${path} must not be readable by others (mode 0600)`);
      }
      return new AuditSigner(createPrivateKey(readFileSync(path)));
    }
    const signer = AuditSigner.generate();
    const pem = signer.privateKey.export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(path, pem, { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
    writeFileSync(`${path}.pub`, signer.publicKeyPem(), { mode: 0o644 });
    return signer;
  }

  publicKeyPem(): string {
    return this.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  }

  sign(seq: number, hash: string, time: string): Checkpoint {
    const signature = edSign(null, checkpointMessage(seq, hash, time), this.privateKey);
    return { seq, hash, time, key_id: this.keyId, signature: signature.toString('base64url') };
  }
}

export interface AuditLogOptions {
  /** A signed checkpoint is written after every this many entries. */
  checkpointEvery?: number;
  now?: () => Date;
}

export class AuditLog {
  private readonly checkpointEvery: number;
  private readonly now: () => Date;
  private readonly lastStmt;
  private readonly insertStmt;
  private readonly insertCheckpointStmt;
  private readonly lastCheckpointStmt;
  private readonly appendBatch: (events: readonly AuditEvent[]) => AuditEntry[];
  private queue: Array<{
    event: AuditEvent;
    resolve: (e: AuditEntry) => void;
    reject: (e: unknown) => void;
  }> = [];

  constructor(
    private readonly db: Db,
    readonly signer: AuditSigner,
    opts: AuditLogOptions = {},
  ) {
    this.checkpointEvery = opts.checkpointEvery ?? 1000;
    this.now = opts.now ?? (() => new Date());
    // Read from the table, not from memory: a rolled-back transaction then cannot leave a
    // stale head behind.
    this.lastStmt = db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
    this.insertStmt = db.prepare(
      'INSERT INTO audit_log (seq, time, actor, action, object, result, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.insertCheckpointStmt = db.prepare(
      'INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)',
    );
    this.lastCheckpointStmt = db.prepare('SELECT MAX(seq) AS seq FROM audit_checkpoints');
    // IMMEDIATE, as every writing transaction of the service: other serving processes share the file.
    this.appendBatch = db.transaction((events: readonly AuditEvent[]) =>
      events.map((e) => this.append(e)),
    ).immediate;
  }

  /**
   * Appends an entry that records no other change (a key release) in a group commit: every entry
   * queued during one event-loop turn goes into one transaction, run once that turn's I/O
   * callbacks are done. The promise settles after the commit, so a caller that answers only then
   * never acknowledges an entry a crash could lose. One commit per turn instead of one per entry
   * is what the write lock, shared by all serving processes, can sustain under load.
   */
  appendCommitted(event: AuditEvent): Promise<AuditEntry> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) setImmediate(() => this.flush());
      this.queue.push({ event, resolve, reject });
    });
  }

  private flush(): void {
    const batch = this.queue;
    this.queue = [];
    let entries: AuditEntry[];
    try {
      entries = this.appendBatch(batch.map((b) => b.event));
    } catch (e) {
      for (const b of batch) b.reject(e);
      return;
    }
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(entries[i]!);
  }

  head(): { seq: number; hash: string } {
    const row = this.lastStmt.get() as { seq: number; hash: string } | undefined;
    return row ?? { seq: 0, hash: GENESIS_HASH };
  }

  /** Appends one entry. Call inside the transaction of the change it records. */
  append(event: AuditEvent): AuditEntry {
    const head = this.head();
    const base = {
      seq: head.seq + 1,
      time: this.now().toISOString(),
      actor: event.actor,
      action: event.action,
      object: event.object,
      result: event.result,
      prev_hash: head.hash,
    };
    const entry: AuditEntry = { ...base, hash: entryHash(base) };
    this.insertStmt.run(
      entry.seq,
      entry.time,
      entry.actor,
      entry.action,
      entry.object,
      entry.result,
      entry.prev_hash,
      entry.hash,
    );
    if (entry.seq % this.checkpointEvery === 0) this.writeCheckpoint(entry.seq, entry.hash);
    return entry;
  }

  /** Signs the current head unless it is already signed (e.g. on shutdown). */
  checkpoint(): Checkpoint | undefined {
    const head = this.head();
    const last = (this.lastCheckpointStmt.get() as { seq: number | null }).seq ?? 0;
    if (head.seq === 0 || last >= head.seq) return undefined;
    return this.writeCheckpoint(head.seq, head.hash);
  }

  private writeCheckpoint(seq: number, hash: string): Checkpoint {
    const cp = this.signer.sign(seq, hash, this.now().toISOString());
    this.insertCheckpointStmt.run(cp.seq, cp.hash, cp.time, cp.key_id, cp.signature);
    return cp;
  }
}

/** Export as JSON lines: a header naming the signer, then entries with checkpoints after theirs. */
export function* exportLines(db: Db, signerPem: string): Generator<string> {
  yield JSON.stringify({ format: EXPORT_FORMAT, signer: signerPem });
  const checkpoints = db
    .prepare('SELECT seq, hash, time, key_id, signature FROM audit_checkpoints ORDER BY seq')
    .all() as Checkpoint[];
  let next = 0;
  const stmt = db.prepare(
    'SELECT seq, time, actor, action, object, result, prev_hash, hash FROM audit_log ORDER BY seq',
  );
  for (const e of stmt.iterate() as IterableIterator<AuditEntry>) {
    yield JSON.stringify(e);
    while (next < checkpoints.length && checkpoints[next]!.seq <= e.seq) {
      if (checkpoints[next]!.seq === e.seq) yield JSON.stringify({ checkpoint: checkpoints[next] });
      next++;
    }
  }
}

export type VerifyResult =
  | {
      ok: true;
      entries: number;
      checkpoints: number;
      /** The newest entry covered by a signed checkpoint; later entries are chained but unsigned. */
      signedSeq: number;
      head: { seq: number; hash: string };
    }
  | { ok: false; line: number; seq: number | null; reason: string; message: string };

export interface VerifyOptions {
  /** PEM of the signing key the operator trusts; without it the export's header key is used. */
  publicKeyPem?: string;
}

const ENTRY_KEYS = ['action', 'actor', 'hash', 'object', 'prev_hash', 'result', 'seq', 'time'];

function isEntry(x: Record<string, unknown>): boolean {
  const keys = Object.keys(x).sort();
  if (keys.length !== ENTRY_KEYS.length || keys.some((k, i) => k !== ENTRY_KEYS[i])) return false;
  return (
    Number.isSafeInteger(x.seq) &&
    ['time', 'actor', 'action', 'object', 'result', 'prev_hash', 'hash'].every(
      (k) => typeof x[k] === 'string',
    )
  );
}

/**
 * Incremental verifier: feed lines in order, then finish(). The first failure is sticky and
 * names the line and the entry where the chain broke.
 */
export class AuditVerifier {
  private lineNo = 0;
  private seq = 0;
  private hash = GENESIS_HASH;
  private checkpoints = 0;
  private signedSeq = 0;
  private key: KeyObject | undefined;
  private failure: Extract<VerifyResult, { ok: false }> | undefined;

  constructor(private readonly opts: VerifyOptions = {}) {
    if (opts.publicKeyPem) this.key = createPublicKey(opts.publicKeyPem);
  }

  private fail(reason: string, message: string, seq: number | null): void {
    this.failure = { ok: false, line: this.lineNo, seq, reason, message };
  }

  push(line: string): boolean {
    if (this.failure) return false;
    this.lineNo++;
    if (line.trim() === '') {
      this.fail('malformed', `line ${this.lineNo} is empty`, null);
      return false;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      this.fail('malformed', `line ${this.lineNo} is not JSON`, null);
      return false;
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      this.fail('malformed', `line ${this.lineNo} is not a JSON object`, null);
      return false;
    }
    const rec = obj as Record<string, unknown>;
    if (this.lineNo === 1) return this.header(rec);
    if ('checkpoint' in rec) return this.checkpoint(rec.checkpoint);
    if (!isEntry(rec)) {
      this.fail(
        'malformed',
        `line ${this.lineNo} is neither an audit entry nor a checkpoint`,
        null,
      );
      return false;
    }
    const e = rec as unknown as AuditEntry;
    const expected = this.seq + 1;
    if (e.seq !== expected) {
      const what =
        e.seq > expected
          ? `entries ${expected}..${e.seq - 1} are missing`
          : `entry ${e.seq} is out of order or repeated`;
      this.fail(
        'sequence',
        `line ${this.lineNo}: expected entry ${expected}, found ${e.seq} (${what})`,
        e.seq,
      );
      return false;
    }
    if (e.prev_hash !== this.hash) {
      this.fail(
        'chain',
        `entry ${e.seq} (line ${this.lineNo}) does not link to entry ${this.seq}: an entry before it was changed, dropped or inserted`,
        e.seq,
      );
      return false;
    }
    if (entryHash(e) !== e.hash) {
      this.fail(
        'hash',
        `entry ${e.seq} (line ${this.lineNo}) was changed: its hash does not match`,
        e.seq,
      );
      return false;
    }
    this.seq = e.seq;
    this.hash = e.hash;
    return true;
  }

  private header(rec: Record<string, unknown>): boolean {
    if (rec.format !== EXPORT_FORMAT || typeof rec.signer !== 'string') {
      this.fail('malformed', `line 1 must be the ${EXPORT_FORMAT} header`, null);
      return false;
    }
    if (!this.key) {
      try {
        this.key = createPublicKey(rec.signer);
      } catch {
        this.fail('malformed', 'the header signer is not a public key', null);
        return false;
      }
    }
    return true;
  }

  private checkpoint(raw: unknown): boolean {
    const cp = raw as Partial<Checkpoint> | null;
    if (
      typeof cp !== 'object' ||
      cp === null ||
      !Number.isSafeInteger(cp.seq) ||
      typeof cp.hash !== 'string' ||
      typeof cp.time !== 'string' ||
      typeof cp.signature !== 'string'
    ) {
      this.fail('malformed', `line ${this.lineNo} is a malformed checkpoint`, null);
      return false;
    }
    if (cp.seq !== this.seq || cp.hash !== this.hash) {
      this.fail(
        'checkpoint',
        `checkpoint at line ${this.lineNo} is for entry ${cp.seq}, but the chain there is at entry ${this.seq} with a different hash`,
        cp.seq ?? null,
      );
      return false;
    }
    const ok =
      this.key !== undefined &&
      edVerify(
        null,
        checkpointMessage(cp.seq, cp.hash, cp.time),
        this.key,
        Buffer.from(cp.signature, 'base64url'),
      );
    if (!ok) {
      this.fail(
        'signature',
        `checkpoint for entry ${cp.seq} (line ${this.lineNo}) has a bad signature`,
        cp.seq,
      );
      return false;
    }
    this.checkpoints++;
    this.signedSeq = cp.seq;
    return true;
  }

  finish(): VerifyResult {
    if (this.failure) return this.failure;
    if (this.lineNo === 0) {
      this.fail('malformed', 'the export is empty', null);
      return this.failure!;
    }
    return {
      ok: true,
      entries: this.seq,
      checkpoints: this.checkpoints,
      signedSeq: this.signedSeq,
      head: { seq: this.seq, hash: this.hash },
    };
  }
}

/** Verifies a whole export given as lines (see {@link AuditVerifier} for streams). */
export function verifyAuditLines(lines: Iterable<string>, opts: VerifyOptions = {}): VerifyResult {
  const v = new AuditVerifier(opts);
  for (const line of lines) if (!v.push(line)) break;
  return v.finish();
}
