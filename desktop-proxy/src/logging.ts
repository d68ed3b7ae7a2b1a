import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

/**
 * JSON logs for connects, disconnects and refusals. The proxy never passes credentials to the
 * logger; the redaction paths are a second guard should a request object ever be logged.
 */
export function createLogger(
  options: { level?: string; destination?: DestinationStream } = {},
): Logger {
  return pino(
    {
      name: 'desktop-proxy',
      level: options.level ?? 'info',
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'req.url',
          'headers.authorization',
          'headers.cookie',
          'token',
          'ticket',
        ],
        censor: '[redacted]',
      },
    },
    options.destination ?? pino.destination(1),
  );
}
