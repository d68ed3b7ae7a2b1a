import type { ClientRequestArgs } from 'node:http';
import WebSocket, { type ClientOptions } from 'ws';
import { createLogger, type Logger } from '../../src/logging.js';

export { waitFor } from './wait.js';

/** A pino logger whose JSON lines are kept for assertions. */
export function capturingLogger(): { logger: Logger; lines: string[]; records: () => LogRecord[] } {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: { write: (s: string) => lines.push(s) },
  });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as LogRecord) };
}

export interface LogRecord {
  event?: string;
  user?: string | null;
  reason?: string;
  status?: number;
  detail?: string;
  [key: string]: unknown;
}

/** An open WebSocket whose messages are queued from the first one on. */
export interface OpenSocket {
  kind: 'open';
  ws: WebSocket;
  protocol: string;
  next(): Promise<Buffer>;
}

export type OpenResult = OpenSocket | { kind: 'refused'; status: number; body: string };

/** Opens a WebSocket; a refused handshake resolves with its HTTP status instead of throwing. */
export function openWs(
  url: string,
  protocols: string[] = ['binary'],
  options: ClientOptions & ClientRequestArgs = {},
): Promise<OpenResult> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, options);
    // The server's first message can arrive in the same read as the handshake response.
    const queue: Buffer[] = [];
    const waiting: Array<(b: Buffer) => void> = [];
    ws.on('message', (data) => {
      const w = waiting.shift();
      if (w) w(data as Buffer);
      else queue.push(data as Buffer);
    });
    const next = () =>
      new Promise<Buffer>((r) => {
        const b = queue.shift();
        if (b) r(b);
        else waiting.push(r);
      });
    ws.once('open', () => resolve({ kind: 'open', ws, protocol: ws.protocol, next }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ kind: 'refused', status: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
}

/** Opens a WebSocket that must be accepted. */
export async function mustOpen(
  url: string,
  protocols?: string[],
  options?: ClientOptions & ClientRequestArgs,
): Promise<OpenSocket> {
  const r = await openWs(url, protocols, options);
  if (r.kind !== 'open') throw new Error(`refused with HTTP ${r.status}: ${r.body.trim()}`);
  return r;
}

/** Waits for the close of a WebSocket and reports code and reason. */
export function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) resolve({ code: 1006, reason: '' });
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
  });
}
