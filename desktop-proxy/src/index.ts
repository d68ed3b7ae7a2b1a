export {
  createDesktopProxy,
  CLOSE_CODES,
  WEBSOCKET_PATH,
  type DesktopProxy,
  type DesktopProxyOptions,
} from './server.js';
export {
  hubAuthenticator,
  ticketAuthenticator,
  insecureNoAuthenticator,
  issueTicket,
  verifyTicket,
  readTicketKey,
  createTicketKeyFile,
  DEFAULT_HUB_COOKIE,
  DEFAULT_TICKET_TTL_SECONDS,
  MAX_TICKET_TTL_SECONDS,
  type Authenticator,
  type AuthResult,
  type HubAuthOptions,
  type TicketAuthOptions,
  type TicketClaims,
} from './auth.js';
export { checkOrigin } from './origin.js';
export {
  parseTarget,
  parseListen,
  isLoopbackHost,
  type Target,
  type ListenAddress,
} from './address.js';
export { createLogger, type Logger } from './logging.js';
export { ProxyMetrics } from './metrics.js';
export { DesktopProxyError, ConfigError, TicketError, type TicketRejection } from './errors.js';
