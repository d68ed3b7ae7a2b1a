import {
  createServer as createHttpServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket, WebSocketServer } from 'ws';
import { describeTarget, isLoopbackHost, parseTarget, type Target } from './address.js';
import type { Authenticator, AuthResult } from './auth.js';
import { ConfigError } from './errors.js';
import { createLogger, type Logger } from './logging.js';
import { ProxyMetrics } from './metrics.js';
import { checkOrigin, normaliseOrigin } from './origin.js';
import { loadAssets, securityHeaders, type StaticAsset } from './page.js';
import { holdReadBuffer, ReadSlabs, releaseReadBuffer } from './read-buffers.js';
import { RfbFilter, RfbProtocolError } from './rfb/index.js';

/** WebSocket close codes the proxy sends; the page maps them to messages. */
export const CLOSE_CODES = {
  sessionEnded: 1000,
  proxyShutdown: 1001,
  policyViolation: 1008,
  internalError: 1011,
  idleTimeout: 4001,
} as const;

export const WEBSOCKET_PATH = '/websockify';

export interface DesktopProxyOptions {
  /** The VNC server: `unix:/path` or `HOST:PORT`. */
  target: string | Target;
  /** Who may connect; see hubAuthenticator, ticketAuthenticator, insecureNoAuthenticator. */
  auth: Authenticator;
  /** Origins (besides the proxy's own host) whose pages may open the WebSocket. */
  allowedOrigins?: readonly string[];
  /** Serve HTTPS/WSS with this certificate chain and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Close a session after this long without traffic either way; 0 disables. Default 1800. */
  idleTimeoutSeconds?: number;
  /** Concurrent sessions (including ones being authenticated). Default 4. */
  maxConnections?: number;
  /** Who may frame the page (CSP frame-ancestors sources); default `'self'`. */
  frameAncestors?: readonly string[];
  logger?: Logger;
  metrics?: ProxyMetrics;
}

export interface DesktopProxy {
  /** Starts listening; host defaults to 127.0.0.1. Refuses no-auth mode on a non-loopback host. */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  address(): AddressInfo | null;
  /** Ends every session (close code 1001) and stops listening. */
  close(): Promise<void>;
  /** For embedding into another HTTP server: the page, /auth-check and /metrics. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  /** For embedding into another HTTP server: the WebSocket at /websockify. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  readonly metrics: ProxyMetrics;
}

// Pause reading from the VNC server while this much is queued towards a slow browser.
const SEND_HIGH_WATER = 4 * 1024 * 1024;
const SEND_LOW_WATER = 1024 * 1024;
// Client messages are small (the largest legitimate one is SetEncodings); cut text is dropped.
const MAX_CLIENT_MESSAGE = 1024 * 1024;
// Largest WebSocket frame assembled from several reads of the VNC socket.
const MAX_BATCH = 1024 * 1024;
// Frames up to this size are copied into one buffer with their header rather than written
// as a header plus pieces (a copy of a few kB costs less than a writev with a callback).
const SMALL_FRAME = 4096;
// While the VNC server is still sending a message body it announced (the pixels of a large
// rectangle), what arrived is held for up to this long after the last read, or until
// MAX_BATCH is reached, so that a large update leaves in a few large frames. Only while the
// proxy has at most HOLD_MAX_SESSIONS sessions: with 50 sessions streaming at once, holding
// raised the proxy's CPU time per MB from 0.9 to 1.6 ms (bench, 50 concurrent sessions).
const HOLD_MS = 2;
const HOLD_MAX_SESSIONS = 4;
const CLOSE_GRACE_MS = 2000;
const TARGET_CONNECT_TIMEOUT_MS = 10_000;

function pathOf(req: IncomingMessage): string {
  try {
    return new URL(req.url ?? '/', 'http://localhost').pathname;
  } catch {
    return '';
  }
}

/**
 * Receives what one read of the VNC socket returned. `more` is true when the read filled its
 * buffer, so that libuv reads again in the same event-loop turn; false when the socket is
 * drained for now.
 */
type Sink = (chunk: Buffer, more: boolean) => void;

/** A connected VNC socket; its data goes to `sink`, queued until a session sets one. */
interface TargetConnection {
  socket: Socket;
  setSink(sink: Sink): void;
}

function connectTarget(target: Target): Promise<TargetConnection> {
  const slabs = new ReadSlabs();
  let sink: Sink | undefined;
  const early: Buffer[] = [];
  const onread = {
    buffer: () => slabs.next(),
    callback: (bytes: number, buffer: Uint8Array) => {
      slabs.used(bytes);
      const chunk = (buffer as Buffer).subarray(0, bytes);
      if (sink) sink(chunk, bytes === buffer.length);
      else {
        holdReadBuffer(chunk);
        early.push(chunk);
      }
      return true;
    },
  };
  return new Promise((resolve, reject) => {
    const socket =
      target.kind === 'unix'
        ? netConnect({ path: target.path, onread })
        : netConnect({ host: target.host, port: target.port, onread });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('ETIMEDOUT'));
    }, TARGET_CONNECT_TIMEOUT_MS);
    socket.once('close', () => slabs.retire());
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve({
        socket,
        setSink(s) {
          sink = s;
          const queued = early.splice(0);
          queued.forEach((chunk, i) => {
            s(chunk, i < queued.length - 1);
            releaseReadBuffer(chunk);
          });
        },
      });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * A unix socket whose listen backlog is full refuses a connect at once with EAGAIN instead of
 * queueing it as TCP does, so a burst of sessions (Xvnc keeps a short backlog) waits its turn.
 */
async function connectTargetInTurn(target: Target): Promise<TargetConnection> {
  const deadline = Date.now() + TARGET_CONNECT_TIMEOUT_MS;
  for (let delayMs = 5; ; delayMs = Math.min(delayMs * 2, 200)) {
    try {
      return await connectTarget(target);
    } catch (err) {
      const busy = (err as NodeJS.ErrnoException).code === 'EAGAIN';
      if (!busy || Date.now() + delayMs > deadline) throw err;
      await sleep(delayMs);
    }
  }
}

/** The header of one unmasked, final, binary WebSocket frame (RFC 6455 section 5.2). */
function binaryFrameHeader(length: number): Buffer {
  if (length < 126) return Buffer.from([0x82, length]);
  if (length < 0x10000) {
    const h = Buffer.allocUnsafe(4);
    h[0] = 0x82;
    h[1] = 126;
    h.writeUInt16BE(length, 2);
    return h;
  }
  const h = Buffer.allocUnsafe(10);
  h[0] = 0x82;
  h[1] = 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}

/** Creates the proxy: the page, a WebSocket at /websockify and the RFB filter between them. */
export function createDesktopProxy(options: DesktopProxyOptions): DesktopProxy {
  const target = typeof options.target === 'string' ? parseTarget(options.target) : options.target;
  const auth = options.auth;
  const allowedOrigins = (options.allowedOrigins ?? []).map(normaliseOrigin);
  const idleMs = Math.round((options.idleTimeoutSeconds ?? 1800) * 1000);
  const maxConnections = options.maxConnections ?? 4;
  if (!Number.isFinite(idleMs) || idleMs < 0) throw new ConfigError('idle timeout must be >= 0');
  if (!Number.isInteger(maxConnections) || maxConnections < 1) {
    throw new ConfigError('max connections must be a positive integer');
  }
  const frameAncestors = options.frameAncestors ?? [];
  const log = options.logger ?? createLogger();
  const metrics = options.metrics ?? new ProxyMetrics();
  const assets: Map<string, StaticAsset> = loadAssets();
  const bytesToClient = metrics.bytes.labels('server-to-client');
  const bytesToServer = metrics.bytes.labels('client-to-server');

  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_CLIENT_MESSAGE,
    handleProtocols: (protocols) => (protocols.has('binary') ? 'binary' : false),
  });

  let slotsInUse = 0;
  let closing = false;
  let nextId = 1;
  const sessions = new Set<(reason: string, code: number, text: string) => void>();

  function logRefusal(
    req: IncomingMessage,
    status: number,
    reason: string,
    user: string | undefined,
  ): void {
    metrics.refusals.labels(reason).inc();
    log.warn(
      {
        event: 'refused',
        user: user ?? null,
        reason,
        status,
        path: pathOf(req),
        remote: req.socket.remoteAddress,
      },
      'connection refused',
    );
  }

  function refuseUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    status: number,
    reason: string,
    user?: string,
  ): void {
    logRefusal(req, status, reason, user);
    if (socket.destroyed) return;
    const body = `${reason}\n`;
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
        'Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }

  async function authorise(req: IncomingMessage): Promise<AuthResult> {
    const origin = checkOrigin(req.headers.origin, req.headers.host, allowedOrigins);
    if (!origin.ok) return { ok: false, status: 403, reason: origin.reason };
    try {
      return await auth.authenticate(req);
    } catch (err) {
      log.error({ event: 'auth-error', err: (err as Error).message }, 'authentication failed');
      return { ok: false, status: 503, reason: 'auth-error' };
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    if (pathOf(req) !== WEBSOCKET_PATH) return refuseUpgrade(req, socket, 404, 'not-found');
    if (closing) return refuseUpgrade(req, socket, 503, 'shutting-down');
    const offered = req.headers['sec-websocket-protocol'];
    if (offered !== undefined && !offered.split(',').some((p) => p.trim() === 'binary')) {
      return refuseUpgrade(req, socket, 400, 'unsupported-subprotocol');
    }
    if (slotsInUse >= maxConnections) return refuseUpgrade(req, socket, 503, 'max-connections');
    // Hold the slot while authenticating so that parallel attempts cannot exceed the cap.
    slotsInUse += 1;
    let held = true;
    const release = () => {
      if (held) {
        held = false;
        slotsInUse -= 1;
      }
    };
    const result = await authorise(req);
    if (!result.ok) {
      release();
      return refuseUpgrade(req, socket, result.status, result.reason, result.user);
    }
    if (socket.destroyed || closing) {
      release();
      return;
    }
    let vnc: TargetConnection;
    try {
      vnc = await connectTargetInTurn(target);
    } catch (err) {
      release();
      log.error(
        {
          event: 'target-error',
          target: describeTarget(target),
          err: (err as NodeJS.ErrnoException).code ?? String(err),
        },
        'cannot reach the VNC server',
      );
      return refuseUpgrade(req, socket, 502, 'target-unreachable', result.user);
    }
    let started = false;
    // ws answers an invalid handshake itself and never calls back; free what we hold then.
    socket.once('close', () => {
      if (!started) {
        vnc.socket.destroy();
        release();
      }
    });
    wss.handleUpgrade(req, socket, head, (ws) => {
      started = true;
      runSession(ws, socket, vnc, result.user, req.socket.remoteAddress, release);
    });
  }

  function runSession(
    ws: WebSocket,
    browser: Duplex,
    vnc: TargetConnection,
    user: string,
    remote: string | undefined,
    release: () => void,
  ): void {
    const tcp = vnc.socket;
    const id = nextId++;
    const startedAt = Date.now();
    let lastActivity = startedAt;
    let sentToClient = 0;
    let sentToServer = 0;
    let ended = false;
    let tcpPaused = false;
    let wsPaused = false;
    let idleTimer: NodeJS.Timeout | undefined;
    // What the filter lets through from the VNC server is gathered over several reads and
    // written to the browser as one binary WebSocket frame: a header and the pieces, in one
    // system call, with no copying. The frame goes out as soon as a read leaves the VNC
    // socket drained (nothing else can arrive in this turn, so waiting would only add
    // latency), or after the turn's last read (setImmediate runs right after the current I/O
    // phase) while reads keep filling their buffers - except in the middle of a message body
    // the server announced, whose rest is certain to follow (see settle). Small frames are copied into
    // one buffer with their header: one plain write, no completion callback to wait for
    // before their read slab can be reused. The frame is written to the socket directly rather
    // than through ws's sender, which would frame (and call back for) every piece; ws still
    // owns the socket's other traffic, and nothing else writes to it in between, as each
    // frame is written in one synchronous step.
    let outbox: Buffer[] = [];
    let outboxBytes = 0;
    let flushScheduled = false;
    let pushing = false;
    let holdTimer: NodeJS.Timeout | undefined;

    tcp.setNoDelay(true);
    metrics.connections.inc();
    metrics.active.inc();
    log.info({ event: 'connect', conn: id, user, remote }, 'session connected');

    const resumeTarget = () => {
      if (tcpPaused && browser.writableLength < SEND_LOW_WATER) {
        tcpPaused = false;
        tcp.resume();
      }
    };

    const flush = () => {
      flushScheduled = false;
      const parts = outbox;
      const total = outboxBytes;
      outbox = [];
      outboxBytes = 0;
      if (parts.length === 0) return;
      const done = () => {
        for (const part of parts) releaseReadBuffer(part);
        resumeTarget();
      };
      if (ended || ws.readyState !== WebSocket.OPEN) return done();
      sentToClient += total;
      bytesToClient.inc(total);
      if (total <= SMALL_FRAME) {
        const frame = Buffer.allocUnsafe((total < 126 ? 2 : 4) + total);
        frame[0] = 0x82;
        let at = 2;
        if (total < 126) frame[1] = total;
        else {
          frame[1] = 126;
          at = frame.writeUInt16BE(total, 2);
        }
        for (const part of parts) at += part.copy(frame, at);
        done();
        browser.write(frame);
        return;
      }
      browser.cork();
      browser.write(binaryFrameHeader(total));
      for (let i = 0; i < parts.length - 1; i++) browser.write(parts[i] as Buffer);
      browser.write(parts[parts.length - 1] as Buffer, done);
      browser.uncork();
      if (!tcpPaused && browser.writableLength > SEND_HIGH_WATER) {
        tcpPaused = true;
        tcp.pause();
      }
    };

    // The VNC socket is drained for now: send what is gathered, unless the rest of a message
    // body is certain to follow (each read of a unix socket returns at most what the server's
    // send buffer holds, about 200 kB; a frame per read costs the proxy and the browser a
    // write and a wake-up each). The timer bounds the wait should the server stall.
    const settle = () => {
      flushScheduled = false;
      if (outboxBytes === 0) return;
      if (filter.serverBodyPending === 0 || ended || sessions.size > HOLD_MAX_SESSIONS) {
        return flush();
      }
      if (holdTimer) holdTimer.refresh();
      else holdTimer = setTimeout(flush, HOLD_MS).unref();
    };

    const filter = new RfbFilter({
      toClient: (chunk) => {
        holdReadBuffer(chunk);
        outbox.push(chunk);
        outboxBytes += chunk.length;
        if (outboxBytes >= MAX_BATCH) flush();
        else if (!pushing && !flushScheduled) {
          flushScheduled = true;
          setImmediate(settle);
        }
      },
      toServer: (chunk) => {
        sentToServer += chunk.length;
        bytesToServer.inc(chunk.length);
        if (!tcp.write(chunk) && !wsPaused) {
          wsPaused = true;
          ws.pause();
        }
      },
      onFiltered: (e) => {
        metrics.filtered.labels(e.direction, e.kind).inc();
        log.info({ event: 'filtered', conn: id, user, ...e }, 'filtered RFB traffic');
      },
    });

    const end = (reason: string, code: number, text: string, detail?: string) => {
      if (ended) return;
      ended = true;
      sessions.delete(end);
      clearTimeout(idleTimer);
      clearTimeout(holdTimer);
      flush();
      release();
      metrics.active.dec();
      metrics.disconnects.labels(reason).inc();
      tcp.destroy();
      if (ws.readyState === WebSocket.OPEN) {
        ws.close(code, text);
        setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
      } else {
        ws.terminate();
      }
      log.info(
        {
          event: 'disconnect',
          conn: id,
          user,
          reason,
          ...(detail === undefined ? {} : { detail }),
          durationMs: Date.now() - startedAt,
          bytesToClient: sentToClient,
          bytesToServer: sentToServer,
        },
        'session ended',
      );
    };
    sessions.add(end);

    const fail = (err: unknown) => {
      if (err instanceof RfbProtocolError) {
        end('protocol-error', CLOSE_CODES.policyViolation, 'RFB protocol violation', err.reason);
      } else {
        end('internal-error', CLOSE_CODES.internalError, 'proxy error', String(err));
      }
    };

    vnc.setSink((chunk, more) => {
      if (ended) return;
      lastActivity = Date.now();
      pushing = true;
      try {
        filter.pushFromServer(chunk);
      } catch (err) {
        return fail(err);
      } finally {
        pushing = false;
      }
      if (!more) settle();
      else if (outboxBytes > 0 && !flushScheduled) {
        flushScheduled = true;
        setImmediate(settle);
      }
    });
    // Small frames carry no completion callback; a drained browser socket resumes reading
    // when the last write that was queued was one of them.
    browser.on('drain', resumeTarget);
    tcp.on('drain', () => {
      if (wsPaused) {
        wsPaused = false;
        ws.resume();
      }
    });
    tcp.on('error', (err: NodeJS.ErrnoException) =>
      end('target-error', CLOSE_CODES.internalError, 'desktop connection failed', err.code),
    );
    tcp.on('close', () => end('target-closed', CLOSE_CODES.sessionEnded, 'session ended'));

    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (ended) return;
      if (!isBinary) {
        return end('text-frame', CLOSE_CODES.policyViolation, 'binary frames only');
      }
      lastActivity = Date.now();
      try {
        filter.pushFromClient(data);
      } catch (err) {
        fail(err);
      }
    });
    ws.on('error', (err) => end('client-error', CLOSE_CODES.policyViolation, 'error', err.message));
    ws.on('close', (code) => end('client-closed', code, '', String(code)));

    if (idleMs > 0) {
      const checkIdle = () => {
        const idleFor = Date.now() - lastActivity;
        if (idleFor >= idleMs) end('idle-timeout', CLOSE_CODES.idleTimeout, 'idle timeout');
        else idleTimer = setTimeout(checkIdle, idleMs - idleFor);
      };
      idleTimer = setTimeout(checkIdle, idleMs);
    }
  }

  function send(
    res: ServerResponse,
    status: number,
    headers: Record<string, string>,
    body?: Buffer | string,
  ) {
    res.writeHead(status, { ...securityHeaders(false, frameAncestors), ...headers });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(
        res,
        405,
        { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' },
        'method not allowed\n',
      );
    }
    const path = pathOf(req);
    if (path === '/auth-check') {
      const result = await authorise(req);
      if (result.ok) return send(res, 204, { 'Cache-Control': 'no-store' });
      logRefusal(req, result.status, result.reason, result.user);
      return send(
        res,
        result.status,
        { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' },
        JSON.stringify({ reason: result.reason }),
      );
    }
    if (path === '/metrics') {
      const body = await metrics.registry.metrics();
      return send(res, 200, { 'Content-Type': metrics.registry.contentType }, body);
    }
    const asset = assets.get(path);
    if (!asset) return send(res, 404, { 'Content-Type': 'text/plain' }, 'not found\n');
    res.writeHead(200, {
      ...securityHeaders(asset.isPage, frameAncestors),
      'Content-Type': asset.contentType,
      'Content-Length': String(asset.body.length),
    });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    handleRequest(req, res).catch((err: unknown) => {
      log.error({ event: 'http-error', err: String(err) }, 'request failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  };
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((err: unknown) => {
      log.error({ event: 'upgrade-error', err: String(err) }, 'upgrade failed');
      socket.destroy();
    });
  };

  let server: Server | undefined;

  return {
    metrics,
    handleRequest: onRequest,
    handleUpgrade: onUpgrade,
    async listen(port = 0, host = '127.0.0.1') {
      if (auth.mode === 'none' && !isLoopbackHost(host)) {
        throw new ConfigError(
          `refusing to listen on ${host} without authentication: --insecure-no-auth needs a loopback address`,
        );
      }
      if (server) throw new ConfigError('already listening');
      const s = options.tls
        ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest)
        : createHttpServer(onRequest);
      s.on('upgrade', onUpgrade);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(port, host, () => {
          s.off('error', reject);
          resolve();
        });
      });
      server = s;
      const address = s.address() as AddressInfo;
      if (auth.mode === 'none') {
        log.warn(
          { event: 'insecure-no-auth', host: address.address, port: address.port },
          'AUTHENTICATION IS OFF: anyone who can reach this address controls the desktop',
        );
      }
      log.info(
        {
          event: 'listening',
          host: address.address,
          port: address.port,
          tls: Boolean(options.tls),
          target: describeTarget(target),
          auth: auth.mode,
        },
        'desktop proxy listening',
      );
      return address;
    },
    address() {
      const a = server?.address();
      return a && typeof a === 'object' ? a : null;
    },
    async close() {
      closing = true;
      for (const end of [...sessions]) {
        end('proxy-shutdown', CLOSE_CODES.proxyShutdown, 'proxy shutting down');
      }
      const s = server;
      server = undefined;
      if (!s) return;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
  };
}
