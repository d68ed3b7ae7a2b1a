import { isIP } from 'node:net';
import { ConfigError } from './errors.js';

/** Where the VNC server listens: a unix socket (the production case) or a TCP address. */
export type Target = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export interface ListenAddress {
  host: string;
  port: number;
}

function parsePort(text: string, what: string, allowZero: boolean): number {
  if (!/^\d{1,5}$/.test(text)) throw new ConfigError(`${what}: invalid port "${text}"`);
  const port = Number(text);
  if (port > 65535 || (port === 0 && !allowZero)) {
    throw new ConfigError(`${what}: port out of range: ${port}`);
  }
  return port;
}

/** Splits HOST:PORT, accepting bracketed IPv6 literals ("[::1]:6080"). */
function splitHostPort(text: string, what: string): { host: string; portText: string } {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (bracketed) return { host: bracketed[1] as string, portText: bracketed[2] as string };
  const colon = text.lastIndexOf(':');
  if (colon <= 0 || text.indexOf(':') !== colon) {
    throw new ConfigError(`${what}: expected HOST:PORT, got "${text}"`);
  }
  return { host: text.slice(0, colon), portText: text.slice(colon + 1) };
}

/** Parses `unix:/path/to/socket` or `HOST:PORT`. */
export function parseTarget(text: string): Target {
  if (text.startsWith('unix:')) {
    const path = text.slice('unix:'.length);
    if (!path.startsWith('/')) throw new ConfigError('target: unix socket path must be absolute');
    return { kind: 'unix', path };
  }
  const { host, portText } = splitHostPort(text, 'target');
  return { kind: 'tcp', host, port: parsePort(portText, 'target', false) };
}

/** Parses the HOST:PORT to listen on; port 0 picks a free port. */
export function parseListen(text: string): ListenAddress {
  const { host, portText } = splitHostPort(text, 'listen');
  return { host, port: parsePort(portText, 'listen', true) };
}

/**
 * True only for addresses that cannot be reached from another machine. Host names other than
 * "localhost" are not resolved: a name could point anywhere, so it does not count as loopback.
 */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

export function describeTarget(target: Target): string {
  return target.kind === 'unix' ? `unix:${target.path}` : `${target.host}:${target.port}`;
}
