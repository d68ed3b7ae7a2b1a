/** Base class of every error the desktop proxy raises on purpose; `code` is stable for callers. */
export class DesktopProxyError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Invalid options or configuration: the proxy refuses to start. */
export class ConfigError extends DesktopProxyError {
  constructor(message: string) {
    super('ERR_CONFIG', message);
  }
}

/** Why a ticket was rejected; the reason is safe to log, the ticket itself never is. */
export type TicketRejection =
  'malformed' | 'bad-signature' | 'expired' | 'lifetime-too-long' | 'wrong-session';

export class TicketError extends DesktopProxyError {
  constructor(readonly reason: TicketRejection) {
    super('ERR_TICKET', `ticket rejected: ${reason}`);
  }
}
