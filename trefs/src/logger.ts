/**
 * Logging: pino, JSON lines on stderr. Key material never reaches a log call; as a second
 * guard, fields that could carry keys are redacted wherever they appear.
 */
import { pino, type Logger } from 'pino';

export function createLogger(level = process.env.TREFS_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      name: 'trefs',
      level,
      redact: {
        paths: ['key', 'dek', 'privateKey', '*.key', '*.dek', '*.privateKey'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
