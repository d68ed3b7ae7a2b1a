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
