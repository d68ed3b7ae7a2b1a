/**
 * The keys an upload needs: the volume key for file names, a DEK per file and, in KMS mode,
 * the project's public key to wrap each DEK to. In master-key mode (for tests and for sites
 * that want a plain gocryptfs volume) one master key serves as volume key and every DEK, so
 * the uploaded tree mounts with the stock gocryptfs.
 */
import { randomBytes } from 'node:crypto';
import {
  decodePublicKey,
  dekContext,
  projectKeyContext,
  unwrapKey,
  uploadResumeContext,
  volumeKeyContext,
  wrapKey,
} from '@tre/crypto';
import type { KeyPair, PublicKey, WrappedKey } from '@tre/crypto';
import type { FileRegistration, KmsClient } from '@tre/kms-service/client';
import { EXIT, TreError } from './errors.js';
import { DekSealer } from './resume-state.js';

export interface UploadKeys {
  readonly volumeKey: Buffer;
  /** A DEK for a new file. */
  newDek(): Buffer;
  /** Seals a DEK for the resume state; undefined when no per-file DEK exists. */
  readonly sealer: DekSealer | undefined;
  /** Registers verified files' wrapped DEKs; absent in master-key mode. */
  register?(
    files: Array<{ fileId: string; size: number; digest: string; dek: Buffer }>,
  ): Promise<void>;
  close(): void;
}

export function masterKeyMode(masterKey: Buffer): UploadKeys {
  return {
    volumeKey: masterKey,
    newDek: () => Buffer.from(masterKey),
    sealer: undefined,
    close: () => masterKey.fill(0),
  };
}

/** Uploaded files' keys stay unreleasable until the ingress confirms the request. */
const PENDING = { state: 'pending' } as const;

/** The KMS client is loaded only in KMS mode: it is the heaviest part of the CLI's startup. */
const kmsModule = () => import('@tre/kms-service/client');

/** Maps a KMS client failure to the CLI exit code scripts rely on. */
export function kmsFailure(e: unknown, what: string): TreError {
  if (e instanceof Error && e.name === 'KmsClientError') {
    const k = e as Error & { status: number };
    const code =
      k.status === 401 || k.status === 403
        ? EXIT.auth
        : k.status >= 500
          ? EXIT.unavailable
          : EXIT.failure;
    return new TreError(code, `${what}: ${k.message}`);
  }
  return new TreError(EXIT.unavailable, `${what}: ${(e as Error).message}`);
}

/**
 * Fetches the project key release, unwraps the project private key with the KEK and with it
 * the volume key (the key of file names); the project private key is wiped before returning.
 */
export async function unlockProject(
  kms: KmsClient,
  project: string,
  kek: KeyPair,
): Promise<{ volumeKey: Buffer; publicKey: PublicKey; epoch: number }> {
  let rel;
  try {
    rel = await kms.projectKey(project);
  } catch (e) {
    throw kmsFailure(e, `cannot get the key of project ${project}`);
  }
  if (!rel.wrapped || !rel.volumeKey) {
    throw new TreError(EXIT.auth, `project ${project}'s key is not (yet) wrapped for you`);
  }
  const pub: PublicKey = decodePublicKey(rel.publicKey);
  let projectPriv: Uint8Array;
  try {
    projectPriv = await unwrapKey(rel.wrapped, kek, projectKeyContext(project, rel.epoch));
  } catch (e) {
    throw new TreError(
      EXIT.wrongKey,
      `the project key does not open with your key file: ${(e as Error).message}`,
    );
  }
  const projectKp: KeyPair = { ...pub, privateKey: projectPriv };
  try {
    const volumeKey = Buffer.from(
      await unwrapKey(rel.volumeKey, projectKp, volumeKeyContext(project)),
    );
    return { volumeKey, publicKey: pub, epoch: rel.epoch };
  } finally {
    projectPriv.fill(0);
  }
}

/**
 * Fetches the project key release, unwraps the project private key with the KEK and the
 * volume key with the project key, and sets up the session key for the resume state.
 */
export async function kmsMode(opts: {
  kmsUrl: string;
  token: string;
  project: string;
  kek: KeyPair;
  sessionId: string;
  /** The wrapped session key of a resumed session. */
  sessionKey?: WrappedKey;
}): Promise<{ keys: UploadKeys; sessionKey: WrappedKey }> {
  const { KmsClient, KmsClientError } = await kmsModule();
  const kms = new KmsClient({ baseUrl: opts.kmsUrl, token: opts.token });
  const { volumeKey, publicKey: pub, epoch } = await unlockProject(kms, opts.project, opts.kek);
  let sessionKey: Buffer;
  let wrappedSession: WrappedKey;
  if (opts.sessionKey) {
    sessionKey = Buffer.from(
      await unwrapKey(opts.sessionKey, opts.kek, uploadResumeContext(opts.sessionId)),
    );
    wrappedSession = opts.sessionKey;
  } else {
    sessionKey = randomBytes(32);
    wrappedSession = await wrapKey(sessionKey, opts.kek, uploadResumeContext(opts.sessionId));
  }
  const keys: UploadKeys = {
    volumeKey,
    newDek: () => randomBytes(32),
    sealer: new DekSealer(sessionKey),
    async register(files) {
      const regs: FileRegistration[] = [];
      for (const f of files) {
        regs.push({
          fileId: f.fileId,
          size: f.size,
          sha256: f.digest,
          epoch,
          wrapped: await wrapKey(f.dek, pub, dekContext(opts.project, f.fileId)),
        });
      }
      try {
        await kms.registerFiles(opts.project, regs, PENDING);
      } catch (e) {
        // A file registered just before a crash is registered already: register the rest.
        if (e instanceof KmsClientError && e.code === 'duplicate_file' && regs.length > 1) {
          for (const r of regs) {
            try {
              await kms.registerFiles(opts.project, [r], PENDING);
            } catch (e1) {
              if (!(e1 instanceof KmsClientError && e1.code === 'duplicate_file'))
                throw kmsFailure(e1, 'file registration failed');
            }
          }
          return;
        }
        if (e instanceof KmsClientError && e.code === 'duplicate_file') return;
        throw kmsFailure(e, 'file registration failed');
      }
    },
    close() {
      volumeKey.fill(0);
      sessionKey.fill(0);
    },
  };
  return { keys, sessionKey: wrappedSession };
}
