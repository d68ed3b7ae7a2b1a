/**
 * Proof that a vault recovery request comes from the vault's owner, checked by the KMS and again
 * by every trustee. Pure: node:crypto only, so clients (trustees' and the owner's) use it too.
 *
 * When the owner creates the vault, their client makes a recovery-authentication key pair
 * (Ed25519) whose private half lives apart from the KEK key file and from the hub login: derived
 * from a recovery code printed once, or held on a second device. The vault stores the public
 * half; every share is wrapped to its trustee under a context naming that key's fingerprint. A
 * recovery request is signed with the private half over the owner, the vault, the fresh recovery
 * public key and the time. Someone who can act as the owner at the hub (a stolen session or hub
 * token, a hub admin) cannot sign; a KMS that swapped the stored public key cannot make a trustee
 * approve, because the trustee's share then does not unwrap under the swapped fingerprint.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

/** How far a request's `requestedAt` may be from the KMS's clock. */
export const RECOVERY_MAX_SKEW_MS = 10 * 60_000;

export interface RecoveryRequestFields {
  username: string;
  /** The KEK the vault protects (its kid). */
  vaultKid: string;
  /** Fingerprint of the recovery-authentication public key ({@link recoveryAuthKid}). */
  authKid: string;
  /** The fresh recovery public key (PublicKeyText) the trustees re-encrypt their shares to. */
  recoveryPublicKey: string;
  /** ISO 8601 time of the request. */
  requestedAt: string;
}

/** A recovery-authentication public key: raw Ed25519, 32 bytes, base64url. */
export function authPublicKeyObject(publicKey: string): KeyObject {
  if (!/^[A-Za-z0-9_-]{43}$/.test(publicKey)) {
    throw new Error('a recovery-authentication key is 32 bytes of Ed25519, base64url');
  }
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey }, format: 'jwk' });
}

/** The raw base64url public half of an Ed25519 key (private or public KeyObject). */
export function authPublicKeyText(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' }) as { crv?: string; x?: string };
  if (jwk.crv !== 'Ed25519' || !jwk.x) throw new Error('not an Ed25519 key');
  return jwk.x;
}

export function recoveryAuthKid(publicKey: string): string {
  return createHash('sha256').update(Buffer.from(publicKey, 'base64url')).digest('base64url');
}

/** The signed bytes: a fixed label, then each field NUL-separated (none may contain NUL). */
export function recoveryRequestMessage(f: RecoveryRequestFields): Buffer {
  const parts = [f.username, f.vaultKid, f.authKid, f.recoveryPublicKey, f.requestedAt];
  if (parts.some((p) => p.includes('\0'))) throw new Error('a field contains NUL');
  return Buffer.from(['tre-vault-recovery/v1', ...parts].join('\0'), 'utf8');
}

export function signRecoveryRequest(privateKey: KeyObject, f: RecoveryRequestFields): string {
  return sign(null, recoveryRequestMessage(f), privateKey).toString('base64url');
}

/** True only for a valid signature by `authPublicKey` (raw base64url) over exactly `f`. */
export function verifyRecoveryRequest(
  authPublicKey: string,
  f: RecoveryRequestFields,
  signature: string,
): boolean {
  try {
    if (recoveryAuthKid(authPublicKey) !== f.authKid) return false;
    return verify(
      null,
      recoveryRequestMessage(f),
      authPublicKeyObject(authPublicKey),
      Buffer.from(signature, 'base64url'),
    );
  } catch {
    return false;
  }
}
