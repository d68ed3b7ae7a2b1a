/**
 * Typed errors of the crypto core. Callers branch on `code` (stable, for scripts and HTTP
 * mapping); messages are one line and never contain key material or plaintext.
 */
export type CryptoErrorCode =
  | 'AUTHENTICATION_FAILED'
  | 'WRONG_PASSPHRASE'
  | 'INVALID_NAME'
  | 'INVALID_FORMAT'
  | 'UNSUPPORTED'
  | 'SHARE_INTEGRITY'
  | 'INVALID_ARGUMENT';

export class CryptoError extends Error {
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Ciphertext, a header, a name or a wrapped key failed its integrity check. */
export class AuthenticationError extends CryptoError {
  constructor(message: string) {
    super('AUTHENTICATION_FAILED', message);
  }
}

export class WrongPassphraseError extends CryptoError {
  constructor(message = 'wrong passphrase') {
    super('WRONG_PASSPHRASE', message);
  }
}

/** A plaintext or encrypted file name that cannot be stored or decoded. */
export class InvalidNameError extends CryptoError {
  constructor(message: string) {
    super('INVALID_NAME', message);
  }
}

/** Structurally malformed input: wrong length, bad version, unparsable JSON. */
export class FormatError extends CryptoError {
  constructor(message: string) {
    super('INVALID_FORMAT', message);
  }
}

export class UnsupportedError extends CryptoError {
  constructor(message: string) {
    super('UNSUPPORTED', message);
  }
}

/** A set of Shamir shares that is too small, inconsistent or corrupted. */
export class ShareIntegrityError extends CryptoError {
  constructor(message: string) {
    super('SHARE_INTEGRITY', message);
  }
}

export class InvalidArgumentError extends CryptoError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}
