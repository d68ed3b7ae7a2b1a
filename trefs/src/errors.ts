/**
 * Typed errors of trefs. Startup errors carry the process exit code the CLI documents;
 * filesystem errors carry the errno the kernel gets. Messages never contain key material.
 */
import { constants } from 'node:os';

export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  keyInput: 3,
  wrongKey: 4,
  kmsUnreachable: 5,
  notMember: 6,
  badCipherDir: 7,
  mountFailed: 8,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class TrefsError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The KEK handed over is missing, malformed or not a private key. */
export class KeyInputError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.keyInput);
  }
}

/** The KEK does not open the project key, or the volume key does not match the cipher dir. */
export class WrongKeyError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.wrongKey);
  }
}

export class KmsUnreachableError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.kmsUnreachable);
  }
}

/** The caller is not (or no longer) a member of the project, or its window is closed. */
export class NotMemberError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.notMember);
  }
}

export class CipherDirError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.badCipherDir);
  }
}

export class MountError extends TrefsError {
  constructor(message: string) {
    super(message, EXIT.mountFailed);
  }
}

/** A filesystem operation failing with a specific errno (positive, e.g. 13 for EACCES). */
export class FsError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'FsError';
  }
}

export const ERRNO = constants.errno;

export function fsError(code: keyof typeof ERRNO, message: string): FsError {
  return new FsError(ERRNO[code], message);
}

/**
 * The negative errno for a FUSE reply: FsError's own, a Node system error's code, EIO for
 * failed authentication or a malformed file (as gocryptfs answers), EIO for anything else.
 */
export function toErrno(err: unknown): number {
  if (err instanceof FsError) return -err.errno;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in ERRNO) return -ERRNO[code as keyof typeof ERRNO];
  if (code === 'INVALID_NAME') return -ERRNO.EINVAL;
  return -ERRNO.EIO;
}

/** A key agent request refused: the HTTP status, a stable code and a message for the user. */
export class AgentError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}
