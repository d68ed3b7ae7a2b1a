/**
 * The wrap contexts of the TRE's key hierarchy, in one place. Every wrapping and unwrapping of a
 * kind of key builds its context here, so the uploader, trefs, the KMS, the lab and the demo
 * cannot drift apart. A context names what the key is bound to: a record copied to another
 * project, file, epoch, recipient or purpose fails authentication.
 */
import type { WrapContext } from './envelope.js';

/** The project private key of one epoch, wrapped to a member's KEK. */
export function projectKeyContext(projectId: string, epoch: number): WrapContext {
  return { purpose: 'project-key', projectId, epoch };
}

/** The project's volume (master) key, wrapped to the project key. */
export function volumeKeyContext(projectId: string): WrapContext {
  return { purpose: 'volume-key', projectId };
}

/** A file's DEK, wrapped to the project key. */
export function dekContext(projectId: string, fileId: string): WrapContext {
  return { purpose: 'file-dek', projectId, fileId };
}

/** A filed file's DEK, wrapped to one egress recipient (requester or reviewer) by username. */
export function egressContext(projectId: string, fileId: string, recipient: string): WrapContext {
  return { purpose: 'egress', projectId, fileId, recipient };
}

/** An upload's DEKs kept in the resume state, bound to the one upload session that may resume. */
export function uploadResumeContext(sessionId: string): WrapContext {
  return { purpose: 'upload-resume', recipient: sessionId };
}

/**
 * A vault owner's recovery share, wrapped to one trustee. It names the owner's
 * recovery-authentication key, so the share unwraps only under the key the owner chose.
 */
export function vaultShareContext(owner: string, trustee: string, authKid: string): WrapContext {
  return { purpose: 'vault-share', recipient: `${owner}->${trustee} auth:${authKid}` };
}

/** A share a trustee re-wraps to the recovering owner's new key, for one recovery request. */
export function vaultRecoveryContext(
  owner: string,
  trustee: string,
  requestId: number,
): WrapContext {
  return { purpose: 'vault-recovery', recipient: `${owner}<-${trustee}#${requestId}` };
}
