import { ConfigError } from './errors.js';

export type OriginResult = { ok: true } | { ok: false; reason: string };

/** Normalises an allow-list entry to a URL origin ("https://hub.example.org"). */
export function normaliseOrigin(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`allowed origin is not a URL: ${text}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`allowed origin must be http or https: ${text}`);
  }
  return url.origin;
}

/**
 * Guards against cross-site WebSocket hijacking: a page on another site could otherwise open the
 * desktop with the victim's cookies. A browser always sends Origin on a WebSocket handshake, so a
 * request without one does not come from a web page and carries no ambient browser credentials.
 * Allowed: an origin on the allow-list, or one whose host:port equals the Host the request was
 * sent to (the proxy's own page).
 */
export function checkOrigin(
  origin: string | undefined,
  host: string | undefined,
  allowed: readonly string[],
): OriginResult {
  if (origin === undefined) return { ok: true };
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return { ok: false, reason: 'origin-malformed' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { ok: false, reason: 'origin-not-allowed' };
  }
  if (allowed.includes(url.origin)) return { ok: true };
  if (host !== undefined && url.host === host.toLowerCase()) return { ok: true };
  return { ok: false, reason: 'origin-not-allowed' };
}
