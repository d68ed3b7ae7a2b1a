/**
 * The HTTP stack tus-js-client sends through. Its default one writes a Buffer body in
 * highWaterMark pieces (16 KiB) to report progress, one socket write and one drain event per
 * piece: for 8 MiB chunks that was a large share of the client's CPU. This one takes a body as
 * one Buffer or as an array of Buffers (the encrypted units of a chunk, never copied into one),
 * hands it to the socket in one writev and reports progress when the body has left.
 */
import { Agent, request } from 'node:http';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { HttpRequest, HttpResponse, HttpStack } from 'tus-js-client';

class Response implements HttpResponse {
  constructor(
    private readonly res: IncomingMessage,
    private readonly body: string,
  ) {}

  getStatus(): number {
    return this.res.statusCode ?? 0;
  }

  getHeader(header: string): string | undefined {
    const v = this.res.headers[header.toLowerCase()];
    return Array.isArray(v) ? v.join(', ') : v;
  }

  getBody(): string {
    return this.body;
  }

  getUnderlyingObject(): IncomingMessage {
    return this.res;
  }
}

class Request implements HttpRequest {
  private readonly headers: Record<string, string> = {};
  private progress: (bytesSent: number) => void = () => undefined;
  private req: ClientRequest | undefined;

  constructor(
    private readonly method: string,
    private readonly url: string,
    private readonly agents: { http: Agent; https: HttpsAgent },
  ) {}

  getMethod(): string {
    return this.method;
  }

  getURL(): string {
    return this.url;
  }

  setHeader(header: string, value: string): void {
    this.headers[header] = value;
  }

  getHeader(header: string): string | undefined {
    return this.headers[header];
  }

  setProgressHandler(handler: (bytesSent: number) => void): void {
    this.progress = handler;
  }

  send(body: unknown): Promise<HttpResponse> {
    return new Promise((resolve, reject) => {
      const pieces =
        body instanceof Uint8Array
          ? [body]
          : Array.isArray(body) && body.every((b) => b instanceof Uint8Array)
            ? (body as Uint8Array[])
            : undefined;
      if (body != null && !pieces) {
        reject(new Error('this HTTP stack sends Buffers or arrays of Buffers only'));
        return;
      }
      const length = pieces?.reduce((n, b) => n + b.length, 0);
      const u = new URL(this.url);
      const https = u.protocol === 'https:';
      const req = (https ? httpsRequest : request)(u, {
        method: this.method,
        headers: {
          ...this.headers,
          ...(length !== undefined ? { 'Content-Length': String(length) } : {}),
        },
        agent: https ? this.agents.https : this.agents.http,
      });
      this.req = req;
      req.on('response', (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve(new Response(res, Buffer.concat(parts).toString('utf8'))));
        res.on('error', reject);
      });
      req.on('error', reject);
      if (length !== undefined) req.once('finish', () => this.progress(length));
      // Corked, the pieces leave in one writev with the headers.
      req.cork();
      for (const p of pieces ?? []) req.write(p);
      req.end();
    });
  }

  abort(): Promise<void> {
    this.req?.destroy();
    return Promise.resolve();
  }

  getUnderlyingObject(): ClientRequest | undefined {
    return this.req;
  }
}

export class WholeBodyHttpStack implements HttpStack {
  private readonly agents = {
    http: new Agent({ keepAlive: true }),
    https: new HttpsAgent({ keepAlive: true }),
  };

  createRequest(method: string, url: string): HttpRequest {
    return new Request(method, url, this.agents);
  }

  getName(): string {
    return 'WholeBodyHttpStack';
  }

  /** Closes idle kept-alive connections. */
  close(): void {
    this.agents.http.destroy();
    this.agents.https.destroy();
  }
}
