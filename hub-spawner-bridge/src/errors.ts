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

/** A BridgeError class with a fixed code and status. */
function coded(code: string, status: number) {
  return class extends BridgeError {
    constructor(message: string) {
      super(code, message, status);
    }
  };
}

/** The site's configuration is unusable; the bridge does not start. */
export class ConfigError extends coded('config', 500) {}
/** The request names resources outside what the site offers. */
export class InvalidRequestError extends coded('invalid_request', 400) {}
/** The passphrase does not open the user's key file. */
export class KeyUnlockError extends coded('key_unlock_failed', 403) {}
export class NotFoundError extends coded('not_found', 404) {}
/** The user already has a session with that server name. */
export class ConflictError extends coded('conflict', 409) {}
/** The batch system refused or failed a command; the message holds its (secret-free) stderr. */
export class ExecutorError extends coded('executor_failed', 502) {}
/** The policy service could not be asked; the bridge refuses rather than guesses. */
export class PolicyUnavailableError extends coded('policy_unavailable', 503) {}
export class TemplateError extends coded('template', 500) {}

export class UnauthorizedError extends BridgeError {
  constructor(message = 'missing or invalid credentials') {
    super('unauthorized', message, 401);
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
