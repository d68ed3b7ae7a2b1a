/**
 * Typed errors of the bridge. Each carries the HTTP status and a stable code the API returns, and
 * a message that is safe to show the user and to log (never a secret).
 */
export class BridgeError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number = 500,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The site's configuration is unusable; the bridge does not start. */
export class ConfigError extends BridgeError {
  constructor(message: string) {
    super('config', message, 500);
  }
}

/** The request names resources outside what the site offers. */
export class InvalidRequestError extends BridgeError {
  constructor(message: string) {
    super('invalid_request', message, 400);
  }
}

/** The KMS policy refuses the session; `reason` is the KMS's stable reason code. */
export class PolicyDeniedError extends BridgeError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super('policy_denied', message, 403);
  }
}

/** The passphrase does not open the user's key file. */
export class KeyUnlockError extends BridgeError {
  constructor(message: string) {
    super('key_unlock_failed', message, 403);
  }
}

export class NotFoundError extends BridgeError {
  constructor(message: string) {
    super('not_found', message, 404);
  }
}

/** The user already has a session with that server name. */
export class ConflictError extends BridgeError {
  constructor(message: string) {
    super('conflict', message, 409);
  }
}

export class UnauthorizedError extends BridgeError {
  constructor(message = 'missing or invalid credentials') {
    super('unauthorized', message, 401);
  }
}

/** The batch system refused or failed a command; the message holds its (secret-free) stderr. */
export class ExecutorError extends BridgeError {
  constructor(message: string) {
    super('executor_failed', message, 502);
  }
}

/** The policy service could not be asked; the bridge refuses rather than guesses. */
export class PolicyUnavailableError extends BridgeError {
  constructor(message: string) {
    super('policy_unavailable', message, 503);
  }
}

export class TemplateError extends BridgeError {
  constructor(message: string) {
    super('template', message, 500);
  }
}
