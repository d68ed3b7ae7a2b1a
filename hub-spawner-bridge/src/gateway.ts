/**
 * The gateway the hub's proxy targets for every session: it finds the ready session whose base
 * URL prefixes the request path and forwards the request (HTTP or WebSocket) to that session's job
 * agent, adding the per-job secret the agent requires. The hub never learns the secret and the
 * agent accepts nothing without it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import type { Logger } from 'pino';
import type { SessionStore } from './store.js';

export const AGENT_SECRET_HEADER = 'x-tre-agent-secret';

export class Gateway {
  private readonly proxy = httpProxy.createProxyServer({ xfwd: true, ws: true });
  private server: Server | undefined;

  constructor(
    private readonly store: SessionStore,
    private readonly log: Logger,
  ) {
    this.proxy.on('error', (err, _req, res) => {
      this.log.warn(
        { event: 'gateway-error', err: (err as NodeJS.ErrnoException).code ?? err.message },
        'agent unreachable',
      );
      if (res && 'writeHead' in res) {
        const r = res as ServerResponse;
        if (!r.headersSent) r.writeHead(502, { 'Content-Type': 'text/plain' });
        r.end('session unreachable\n');
      } else {
        (res as Duplex | undefined)?.destroy();
      }
    });
  }

  private target(req: IncomingMessage) {
    const path = (req.url ?? '/').split('?')[0] as string;
    // The base URL ends with '/'; /user/alice (without the slash) still belongs to it.
    const s = this.store.routeFor(path.endsWith('/') ? path : `${path}/`);
    if (!s || !s.agentHost || !s.agentPort) return undefined;
    const host = s.agentHost.includes(':') ? `[${s.agentHost}]` : s.agentHost;
    return { url: `http://${host}:${s.agentPort}`, secret: s.agentSecret };
  }

  handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const t = this.target(req);
    if (!t) {
      res.writeHead(503, { 'Content-Type': 'text/plain', 'Retry-After': '2' });
      res.end('no running session here\n');
      return;
    }
    this.proxy.web(req, res, { target: t.url, headers: { [AGENT_SECRET_HEADER]: t.secret } });
  };

  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => socket.destroy());
    const t = this.target(req);
    if (!t) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
      return;
    }
    this.proxy.ws(req, socket, head, {
      target: t.url,
      headers: { [AGENT_SECRET_HEADER]: t.secret },
    });
  };

  async listen(port: number, host: string): Promise<AddressInfo> {
    const server = createServer(this.handleRequest);
    server.on('upgrade', this.handleUpgrade);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    this.proxy.close();
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
