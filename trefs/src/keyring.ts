/**
 * All key material of one mount, in memory only: the member's KEK, the project key pairs, the
 * volume key and the per-file DEKs. DEKs arrive wrapped in one batch at mount and are
 * unwrapped on first use; fresh DEKs for new files are wrapped to the project key and
 * registered with the key service before anyone writes a header carrying their file ID.
 *
 * wipe() zeroes every raw key buffer and drops all derived cipher objects; afterwards every
 * request for a key fails with EACCES. (Node's KeyObjects and cipher contexts live in OpenSSL
 * memory that JavaScript cannot overwrite; they become unreachable and are freed by the GC.)
 */
import {
  AuthenticationError,
  ContentCipher,
  KEY_LEN,
  publicKeyFromPrivate,
  unwrapKey,
  wrapKey,
  type KeyPair,
  type PublicKey,
  type WrapContext,
  type WrappedKey,
  dekContext,
  projectKeyContext,
  volumeKeyContext,
} from '@tre/crypto';
import { DekMaker } from './dek-maker.js';
import { WrongKeyError, fsError } from './errors.js';
import { fileIdHex, type KeyService, type WrappedDekRecord } from './key-source.js';

/** A file's key, ready for block encryption. */
export interface FileKey {
  readonly fileId: Buffer;
  readonly dek: Buffer;
  readonly cipher: ContentCipher;
}

export interface KeyRingOptions {
  /** How many registered fresh DEKs to keep ready for new files. */
  poolSize?: number;
}

export class KeyRing {
  private readonly wrapped = new Map<string, WrappedDekRecord>();
  private readonly cache = new Map<string, Promise<FileKey>>();
  private readonly pool: FileKey[] = [];
  /** Every DEK buffer handed out, so wipe() can zero them synchronously. */
  private readonly issued = new Set<Buffer>();
  private refill: Promise<void> | undefined;
  private readonly maker: DekMaker;
  private refills = 0;
  private wiped = false;

  private constructor(
    private readonly service: KeyService,
    readonly projectId: string,
    private readonly kek: KeyPair,
    private readonly projectKeys: Map<number, KeyPair>,
    private readonly currentEpoch: number,
    private readonly volume: Buffer,
    private readonly poolSize: number,
  ) {
    const { kem, kid, publicKey } = projectKeys.get(currentEpoch)!;
    this.maker = new DekMaker(projectId, { kem, kid, publicKey });
  }

  /**
   * Fetches and opens the project's keys with the member's KEK, then loads the wrapped DEKs.
   * A KEK that does not open the project key is a WrongKeyError; nothing is mounted then.
   */
  static async open(
    service: KeyService,
    kek: KeyPair,
    options: KeyRingOptions = {},
  ): Promise<KeyRing> {
    const keys = await service.fetchProjectKeys();
    if (keys.epochs.length === 0) {
      throw new WrongKeyError(`project ${keys.projectId} has released no project key to you`);
    }
    const pairs = new Map<number, KeyPair>();
    for (const rec of keys.epochs) {
      let priv: Uint8Array;
      try {
        priv = await unwrapKey(
          rec.wrappedPrivateKey,
          kek,
          projectKeyContext(keys.projectId, rec.epoch),
        );
      } catch (err) {
        if (err instanceof AuthenticationError) {
          throw new WrongKeyError(
            `the key handed over (${kek.kid}) does not open the key of project ${keys.projectId} ` +
              `(epoch ${rec.epoch}, wrapped to ${rec.wrappedPrivateKey.kid}): wrong KEK`,
          );
        }
        throw err;
      }
      const pair = await publicKeyFromPrivate(rec.publicKey.kem, priv);
      Buffer.from(priv.buffer, priv.byteOffset, priv.byteLength).fill(0);
      if (pair.kid !== rec.publicKey.kid) {
        throw new WrongKeyError(
          `project ${keys.projectId} epoch ${rec.epoch}: the unwrapped private key does not match the published public key`,
        );
      }
      pairs.set(rec.epoch, pair);
    }
    const volEpoch = pairs.get(keys.wrappedVolumeKey.epoch);
    if (volEpoch === undefined) {
      throw new WrongKeyError(
        `the volume key is wrapped to epoch ${keys.wrappedVolumeKey.epoch}, which was not released to you`,
      );
    }
    let volume: Uint8Array;
    try {
      volume = await unwrapKey(
        keys.wrappedVolumeKey.wrapped,
        volEpoch,
        volumeKeyContext(keys.projectId),
      );
    } catch (err) {
      if (err instanceof AuthenticationError) {
        throw new WrongKeyError(
          `the project key does not open the volume key of ${keys.projectId}`,
        );
      }
      throw err;
    }
    if (volume.length !== KEY_LEN) {
      throw new WrongKeyError(`the volume key has ${volume.length} bytes, expected ${KEY_LEN}`);
    }
    const current = Math.max(...pairs.keys());
    const ring = new KeyRing(
      service,
      keys.projectId,
      kek,
      pairs,
      current,
      Buffer.from(volume),
      options.poolSize ?? 64,
    );
    Buffer.from(volume.buffer, volume.byteOffset, volume.byteLength).fill(0);
    for await (const rec of service.listWrappedDeks()) ring.wrapped.set(rec.fileId, rec);
    return ring;
  }

  get wrappedCount(): number {
    return this.wrapped.size;
  }

  get isWiped(): boolean {
    return this.wiped;
  }

  /** The volume key (file names); callers must not keep copies. */
  volumeKey(): Buffer {
    this.assertLive();
    return this.volume;
  }

  /** The key of an existing file, unwrapped on first use and cached. */
  fileKey(fileId: Buffer): Promise<FileKey> {
    this.assertLive();
    const hex = fileIdHex(fileId);
    let entry = this.cache.get(hex);
    if (entry === undefined) {
      entry = this.unwrapFileKey(Buffer.from(fileId), hex);
      this.cache.set(hex, entry);
      entry.catch(() => this.cache.delete(hex));
    }
    return entry;
  }

  /** A fresh DEK whose wrapped form the key service already holds. */
  async newFileKey(): Promise<FileKey> {
    this.assertLive();
    while (this.pool.length === 0) await this.startRefill();
    const key = this.pool.shift()!;
    if (this.pool.length < this.poolSize / 2) void this.startRefill().catch(() => undefined);
    this.cache.set(fileIdHex(key.fileId), Promise.resolve(key));
    return key;
  }

  /** Epochs of the project key this mount holds. */
  get epochs(): number[] {
    return [...this.projectKeys.keys()];
  }

  /**
   * The project private key of `epoch` wrapped to a newcomer's KEK (a grant's completion); the
   * private key itself never leaves the ring.
   */
  async wrapProjectKey(epoch: number, recipient: PublicKey): Promise<WrappedKey> {
    this.assertLive();
    const pair = this.projectKeys.get(epoch);
    if (pair === undefined) {
      throw new WrongKeyError(`epoch ${epoch} of the project key was not released to you`);
    }
    return wrapKey(pair.privateKey, recipient, projectKeyContext(this.projectId, epoch));
  }

  /**
   * Opens a key wrapped to the member's own KEK (an egress review DEK). The caller zeroes the
   * result after use.
   */
  async unwrapForMember(wrapped: WrappedKey, context: WrapContext): Promise<Buffer> {
    this.assertLive();
    const key = await unwrapKey(wrapped, this.kek, context);
    return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  }

  /** Starts the key worker (thread and modules) ahead of the first create. */
  warmUp(): void {
    this.maker.warmUp();
  }

  /** Zeroes all key material; every later request fails with EACCES. */
  wipe(): void {
    if (this.wiped) return;
    this.wiped = true;
    for (const dek of this.issued) dek.fill(0);
    this.issued.clear();
    for (const entry of this.cache.values()) {
      entry.then((k) => k.dek.fill(0)).catch(() => undefined);
    }
    for (const k of this.pool) k.dek.fill(0);
    this.pool.length = 0;
    this.cache.clear();
    this.wrapped.clear();
    this.volume.fill(0);
    for (const pair of this.projectKeys.values()) pair.privateKey.fill(0);
    this.projectKeys.clear();
    this.kek.privateKey.fill(0);
    void this.maker.close();
  }

  private assertLive(): void {
    if (this.wiped) throw fsError('EACCES', 'access to the project has ended; keys were wiped');
  }

  private async unwrapFileKey(fileId: Buffer, hex: string): Promise<FileKey> {
    let rec = this.wrapped.get(hex);
    if (rec === undefined) {
      rec = await this.service.fetchWrappedDek(hex);
      if (rec === undefined) throw fsError('EACCES', `no key released for file ${hex}`);
      this.wrapped.set(hex, rec);
    }
    const pair = this.projectKeys.get(rec.epoch);
    if (pair === undefined) {
      throw fsError('EACCES', `file ${hex} is wrapped to project epoch ${rec.epoch}, not released`);
    }
    let dek: Uint8Array;
    try {
      dek = await unwrapKey(rec.wrappedDek, pair, dekContext(this.projectId, hex));
    } catch (err) {
      if (err instanceof AuthenticationError) {
        throw fsError('EIO', `the wrapped key of file ${hex} failed authentication`);
      }
      throw err;
    }
    this.assertLive();
    if (dek.length !== KEY_LEN) throw fsError('EIO', `the key of file ${hex} has a wrong length`);
    const buf = Buffer.from(dek.buffer, dek.byteOffset, dek.byteLength);
    this.issued.add(buf);
    return { fileId, dek: buf, cipher: new ContentCipher(buf) };
  }

  private startRefill(): Promise<void> {
    this.refill ??= this.doRefill().finally(() => {
      this.refill = undefined;
    });
    return this.refill;
  }

  private async doRefill(): Promise<void> {
    // The first batch is small so the first create does not wait for a whole pool.
    const n = this.refills++ === 0 ? 4 : Math.max(1, this.poolSize - this.pool.length);
    const made = await this.maker.make(n);
    const fresh: FileKey[] = [];
    const records: WrappedDekRecord[] = [];
    for (const m of made) {
      const fileId = Buffer.from(m.fileId.buffer, m.fileId.byteOffset, m.fileId.byteLength);
      const dek = Buffer.from(m.dek.buffer, m.dek.byteOffset, m.dek.byteLength);
      this.issued.add(dek);
      records.push({ fileId: fileIdHex(fileId), epoch: this.currentEpoch, wrappedDek: m.wrapped });
      fresh.push({ fileId, dek, cipher: new ContentCipher(dek) });
    }
    if (this.wiped) {
      for (const k of fresh) k.dek.fill(0);
      return;
    }
    await this.service.registerFiles(records);
    if (this.wiped) {
      for (const k of fresh) k.dek.fill(0);
      return;
    }
    for (const r of records) this.wrapped.set(r.fileId, r);
    this.pool.push(...fresh);
  }
}
