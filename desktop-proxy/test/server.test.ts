import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { issueTicket, ticketAuthenticator, insecureNoAuthenticator } from '../src/auth.js';
import { ConfigError } from '../src/errors.js';
import { createDesktopProxy, type DesktopProxy, type DesktopProxyOptions } from '../src/server.js';
import type { Socket } from 'node:net';
import { RfbBenchClient, wsTransport } from '../src/bench/rfb-client.js';
import { startSyntheticServer } from '../src/bench/synthetic-server.js';
import { pooledSlabs } from '../src/read-buffers.js';
import { capturingLogger, closed, mustOpen, openWs, waitFor } from './support/proxy.js';
import { startXvnc, type XvncSession } from './support/xvnc.js';

const run = promisify(execFile);
const key = Buffer.alloc(32, 42);
const otherKey = Buffer.alloc(32, 43);

let xvnc: XvncSession;
const proxies: DesktopProxy[] = [];

beforeAll(async () => {
  xvnc = await startXvnc();
});
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});
afterAll(async () => {
  await xvnc?.stop();
});

async function start(overrides: Partial<DesktopProxyOptions> = {}) {
  const logs = capturingLogger();
  const proxy = createDesktopProxy({
    target: `unix:${xvnc.socketPath}`,
    auth: ticketAuthenticator({ key, user: 'alice', session: 'job-1' }),
    logger: logs.logger,
    ...overrides,
  });
  proxies.push(proxy);
  const { port } = await proxy.listen(0, '127.0.0.1');
  return { proxy, logs, base: `127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/websockify` };
}

const ticket = (user = 'alice', k = key) => issueTicket(k, { user, session: 'job-1' });

describe('WebSocket to VNC', () => {
  test('the owner reaches the VNC server with the binary subprotocol or none', async () => {
    const { ws, logs } = await start();
    for (const protocols of [['binary'], []]) {
      const opened = await mustOpen(`${ws}?ticket=${ticket()}`, protocols);
      expect(opened.protocol).toBe(protocols[0] ?? '');
      const hello = await opened.next();
      expect(hello.toString('latin1')).toMatch(/^RFB 003\.00\d\n$/);
      opened.ws.close();
      await closed(opened.ws);
    }
    await waitFor(
      () => logs.records().filter((r) => r.event === 'disconnect').length === 2,
      'disconnect logs',
    );
    const connects = logs.records().filter((r) => r.event === 'connect');
    expect(connects.map((r) => r.user)).toEqual(['alice', 'alice']);
  });

  test('concurrent sessions each get their own intact byte stream', async () => {
    const { ws } = await start({ maxConnections: 30 });
    const clients = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const c = new RfbBenchClient(await wsTransport(`${ws}?ticket=${ticket()}`));
        await c.handshake();
        return c;
      }),
    );
    // The client parses every byte; a stream mixed with another session's fails to parse.
    await Promise.all(
      clients.map(async (c) => {
        for (let i = 0; i < 2; i++) await c.update();
        expect([c.width, c.height]).toEqual([1024, 768]);
        c.close();
      }),
    );
  }, 30_000);

  test('a burst of connects waits for a VNC server whose unix backlog is full', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-backlog-'));
    const path = join(dir, 'vnc.sock');
    // A server with a one-slot backlog that accepts nothing for a while: the kernel refuses
    // further unix connects with EAGAIN instead of queueing them.
    const server = spawn(process.execPath, [
      '-e',
      `const s = require('net').createServer((c) => c.write('RFB 003.008\\n'));
       s.listen({ path: ${JSON.stringify(path)}, backlog: 1 }, () => {
         console.log('ready');
         const until = Date.now() + 1500;
         while (Date.now() < until);
       });`,
    ]);
    try {
      await new Promise((resolve) => server.stdout.once('data', resolve));
      const { ws } = await start({ target: `unix:${path}`, maxConnections: 30 });
      const hellos = await Promise.all(
        Array.from({ length: 12 }, async () => {
          const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
          const hello = (await opened.next()).toString('latin1');
          opened.ws.close();
          return hello;
        }),
      );
      expect(hellos).toEqual(Array(12).fill('RFB 003.008\n'));
    } finally {
      server.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a subprotocol list without binary is refused', async () => {
    const { ws } = await start();
    const res = await openWs(`${ws}?ticket=${ticket()}`, ['base64']);
    expect(res).toMatchObject({ kind: 'refused', status: 400 });
  });

  test('text frames close the session as a policy violation', async () => {
    const { ws, logs } = await start();
    const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
    await opened.next();
    opened.ws.send('RFB 003.008\n');
    expect((await closed(opened.ws)).code).toBe(1008);
    await waitFor(
      () => logs.records().some((r) => r.event === 'disconnect' && r.reason === 'text-frame'),
      'text-frame log',
    );
  });

  test('a protocol violation from the client closes both sides (fail closed)', async () => {
    const { ws, logs } = await start();
    const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
    await opened.next();
    opened.ws.send(Buffer.from('HTTP/1.1 200\n'));
    expect((await closed(opened.ws)).code).toBe(1008);
    await waitFor(
      () => logs.records().some((r) => r.event === 'disconnect' && r.reason === 'protocol-error'),
      'protocol-error log',
    );
    const rec = logs.records().find((r) => r.reason === 'protocol-error');
    expect(typeof rec?.detail).toBe('string');
  });

  test('an unreachable VNC server is answered with 502 and logged', async () => {
    const { ws, logs } = await start({ target: `unix:${join(xvnc.dir, 'missing.sock')}` });
    expect(await openWs(`${ws}?ticket=${ticket()}`)).toMatchObject({
      kind: 'refused',
      status: 502,
    });
    expect(logs.records().some((r) => r.reason === 'target-unreachable')).toBe(true);
  });
});

describe('refusals', () => {
  test('unauthenticated, forged, expired, wrong-user and wrong-origin attempts are refused and logged without secrets', async () => {
    const { ws, logs, base } = await start();
    const forged = ticket('alice', otherKey);
    const expired = issueTicket(key, {
      user: 'alice',
      session: 'job-1',
      ttlSeconds: 60,
      now: Date.now() - 120_000,
    });
    const bob = ticket('bob');
    const good = ticket();
    const cases: Array<[string, Record<string, string>, number, string]> = [
      [ws, {}, 401, 'no-credentials'],
      [`${ws}?ticket=${forged}`, {}, 401, 'ticket-bad-signature'],
      [`${ws}?ticket=${expired}`, {}, 401, 'ticket-expired'],
      [`${ws}?ticket=${bob}`, {}, 403, 'wrong-user'],
      [`${ws}?ticket=${good}`, { Origin: 'https://evil.example' }, 403, 'origin-not-allowed'],
      [`ws://${base}/other?ticket=${good}`, {}, 404, 'not-found'],
    ];
    for (const [url, headers, status, reason] of cases) {
      const res = await openWs(url, ['binary'], { headers });
      expect(res).toMatchObject({ kind: 'refused', status, body: `${reason}\n` });
    }
    const refusals = logs.records().filter((r) => r.event === 'refused');
    expect(refusals.map((r) => [r.status, r.reason])).toEqual(
      cases.map(([, , status, reason]) => [status, reason]),
    );
    expect(refusals.find((r) => r.reason === 'wrong-user')?.user).toBe('bob');
    const allLogs = logs.lines.join('');
    for (const secret of [forged, expired, bob, good]) {
      expect(allLogs).not.toContain(secret);
      expect(allLogs).not.toContain(secret.split('.')[4]);
    }
  });

  test('the same host is an allowed origin; so is an allow-listed one', async () => {
    const { ws, base } = await start({ allowedOrigins: ['https://hub.example.org'] });
    for (const origin of [`http://${base}`, 'https://hub.example.org']) {
      const res = await openWs(`${ws}?ticket=${ticket()}`, ['binary'], { origin });
      expect(res.kind).toBe('open');
      if (res.kind === 'open') res.ws.terminate();
    }
  });

  test('the auth-check endpoint tells the page why it would be refused', async () => {
    const { base, logs } = await start();
    const refused = await fetch(`http://${base}/auth-check?ticket=${ticket('bob')}`);
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ reason: 'wrong-user' });
    const ok = await fetch(`http://${base}/auth-check?ticket=${ticket()}`);
    expect(ok.status).toBe(204);
    expect(logs.records().filter((r) => r.event === 'refused')).toHaveLength(1);
  });

  test('no-auth mode refuses to listen on a non-loopback address', async () => {
    const proxy = createDesktopProxy({
      target: `unix:${xvnc.socketPath}`,
      auth: insecureNoAuthenticator(),
      logger: capturingLogger().logger,
    });
    await expect(proxy.listen(0, '0.0.0.0')).rejects.toThrow(ConfigError);
    expect(proxy.address()).toBeNull();
  });
});

describe('limits', () => {
  test('an idle session is closed after the idle timeout, with code 4001', async () => {
    const { ws, logs } = await start({ idleTimeoutSeconds: 1 });
    const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
    const t0 = Date.now();
    await opened.next();
    const { code } = await closed(opened.ws);
    const elapsed = Date.now() - t0;
    expect(code).toBe(4001);
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(5000);
    await waitFor(
      () => logs.records().some((r) => r.event === 'disconnect' && r.reason === 'idle-timeout'),
      'idle log',
    );
  });

  test('traffic keeps a session alive past the idle timeout', async () => {
    const { ws } = await start({ idleTimeoutSeconds: 1 });
    const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
    await opened.next();
    opened.ws.send(Buffer.from('RFB 003.008\n'));
    let closedEarly = false;
    opened.ws.once('close', () => (closedEarly = true));
    // Security type None, then ClientInit (shared), then a stream of tiny pointer events.
    await new Promise((r) => setTimeout(r, 200));
    opened.ws.send(Buffer.from([1]));
    await new Promise((r) => setTimeout(r, 200));
    opened.ws.send(Buffer.from([1]));
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 250));
      opened.ws.send(Buffer.from([5, 0, 0, i, 0, i]));
    }
    expect(closedEarly).toBe(false);
    opened.ws.terminate();
  });

  test('connections beyond the cap are refused with 503 until a slot frees', async () => {
    const { ws, logs } = await start({ maxConnections: 2 });
    const a = await openWs(`${ws}?ticket=${ticket()}`);
    const b = await openWs(`${ws}?ticket=${ticket()}`);
    expect([a.kind, b.kind]).toEqual(['open', 'open']);
    expect(await openWs(`${ws}?ticket=${ticket()}`)).toMatchObject({
      kind: 'refused',
      status: 503,
    });
    expect(logs.records().some((r) => r.reason === 'max-connections')).toBe(true);
    if (a.kind !== 'open') throw new Error('unreachable');
    a.ws.close();
    await closed(a.ws);
    await waitFor(
      () => logs.records().filter((r) => r.event === 'disconnect').length === 1,
      'slot release',
    );
    const c = await openWs(`${ws}?ticket=${ticket()}`);
    expect(c.kind).toBe('open');
    for (const r of [b, c]) if (r.kind === 'open') r.ws.terminate();
  });
});

describe('backpressure', () => {
  test('a browser that stops reading stops the proxy reading from the VNC server', async () => {
    const socketPath = join(xvnc.dir, 'synthetic.sock');
    const server = await startSyntheticServer(socketPath, 1024, 768);
    try {
      const { ws, base } = await start({ target: `unix:${socketPath}` });
      const client = await mustOpen(`${ws}?ticket=${ticket()}`);
      await client.next();
      client.ws.send(Buffer.from('RFB 003.008\n'));
      await client.next();
      client.ws.send(Buffer.from([1]));
      await client.next();
      client.ws.send(Buffer.from([1]));
      await client.next();
      const request = Buffer.from([3, 0, 0, 0, 0, 0, 4, 0, 3, 0]);
      // The server answers each request with 3 MiB at once: 60 MiB in all, far beyond the
      // proxy's send buffer limit.
      (client.ws as unknown as { _socket: Socket })._socket.pause();
      for (let i = 0; i < 20; i++) client.ws.send(request);
      const forwarded = async () => {
        const text = await (await fetch(`http://${base}/metrics`)).text();
        return Number(
          /^desktop_proxy_bytes_total\{direction="server-to-client"\} (\d+)/m.exec(text)?.[1],
        );
      };
      await new Promise((r) => setTimeout(r, 1500));
      const whilePaused = await forwarded();
      expect(whilePaused).toBeLessThan(16 * 1024 * 1024);
      await new Promise((r) => setTimeout(r, 500));
      expect(await forwarded()).toBe(whilePaused);
      // Reading again drains everything the server sent, in order.
      (client.ws as unknown as { _socket: Socket })._socket.resume();
      const total = 20 * (16 + 1024 * 768 * 4);
      let received = 0;
      while (received < total) received += (await client.next()).length;
      expect(received).toBe(total);
      client.ws.terminate();
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 30_000);
});

describe('frames while a body is still arriving', () => {
  test('a rectangle the server stops sending halfway reaches the browser up to where it stopped', async () => {
    const path = join(xvnc.dir, 'stalling.sock');
    let sendRest: () => void = () => {};
    // Version, security None, ServerInit for 64x48 at 32 bpp; then, on the update request,
    // the header and first half of a Raw rectangle, the rest only when the test says so.
    const server = createServer((socket) => {
      const init = Buffer.alloc(24);
      init.writeUInt16BE(64, 0);
      init.writeUInt16BE(48, 2);
      Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).copy(init, 4);
      const header = Buffer.alloc(16);
      header.writeUInt16BE(1, 2);
      header.writeUInt16BE(64, 8);
      header.writeUInt16BE(48, 10);
      const body = randomBytes(64 * 48 * 4);
      const replies = [Buffer.from([1, 1]), Buffer.alloc(4), init];
      socket.write('RFB 003.008\n');
      let received = 0;
      socket.on('error', () => socket.destroy());
      socket.on('data', (d: Buffer) => {
        const before = received;
        received += d.length;
        for (const [at, reply] of [12, 13, 14].entries()) {
          if (before < reply && received >= reply) socket.write(replies[at] as Buffer);
        }
        if (before < 24 && received >= 24) {
          socket.write(Buffer.concat([header, body.subarray(0, body.length / 2)]));
          sendRest = () => socket.write(body.subarray(body.length / 2));
        }
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const { ws } = await start({ target: `unix:${path}` });
      const client = await mustOpen(`${ws}?ticket=${ticket()}`);
      let bytes = (await client.next()).length;
      client.ws.on('message', (d: Buffer) => (bytes += d.length));
      for (const reply of ['RFB 003.008\n', '\x01', '\x01']) {
        await new Promise((r) => setTimeout(r, 50));
        client.ws.send(Buffer.from(reply, 'latin1'));
      }
      client.ws.send(Buffer.from([3, 0, 0, 0, 0, 0, 0, 64, 0, 48]));
      const handshake = 12 + 2 + 4 + 24;
      const half = 16 + (64 * 48 * 4) / 2;
      await waitFor(() => bytes === handshake + half, 'the first half of the rectangle', 2000);
      sendRest();
      await waitFor(() => bytes === handshake + 16 + 64 * 48 * 4, 'the whole rectangle', 2000);
      client.ws.terminate();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

/**
 * A VNC server that, once the client is initialised, pushes `updates` FramebufferUpdates of
 * random Raw rectangles, each followed by a ServerCutText carrying `marker`, in writes of
 * random sizes. `expected` is the SHA-256 and length of everything it sent but the cut texts.
 */
function startPushingServer(
  path: string,
  updates: number,
  marker: string,
): Promise<{ server: Server; expected: Promise<{ hash: string; length: number }> }> {
  const [width, height] = [1024, 768];
  let finish: (sent: { hash: string; length: number }) => void = () => {};
  const expected = new Promise<{ hash: string; length: number }>((r) => (finish = r));
  const server = createServer((socket) => {
    const hash = createHash('sha256');
    let length = 0;
    const send = (b: Buffer, counted = true) => {
      if (counted) {
        hash.update(b);
        length += b.length;
      }
      return socket.write(b);
    };
    const init = Buffer.alloc(24);
    init.writeUInt16BE(width, 0);
    init.writeUInt16BE(height, 2);
    Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).copy(init, 4);
    const replies = [Buffer.from([1, 1]), Buffer.alloc(4), init];
    send(Buffer.from('RFB 003.008\n'));
    let received = 0;
    socket.on('error', () => socket.destroy());
    socket.on('data', (d: Buffer) => {
      // Version (12), security choice (1), ClientInit (1); later SetEncodings and such.
      const before = received;
      received += d.length;
      for (const [at, reply] of [
        [12, 0],
        [13, 1],
        [14, 2],
      ] as const) {
        if (before < at && received >= at) send(replies[reply] as Buffer);
      }
      if (before < 14 && received >= 14) void push();
    });
    async function push() {
      for (let i = 0; i < updates && !socket.destroyed; i++) {
        const w = 1 + Math.floor(Math.random() * 700);
        const h = 1 + Math.floor(Math.random() * 700);
        const update = Buffer.alloc(16);
        update.writeUInt16BE(1, 2);
        update.writeUInt16BE(w, 8);
        update.writeUInt16BE(h, 10);
        const body = Buffer.concat([update, randomBytes(w * h * 4)]);
        const text = Buffer.from(marker.repeat(1 + Math.floor(Math.random() * 2000)), 'latin1');
        const cut = Buffer.alloc(8);
        cut[0] = 3;
        cut.writeUInt32BE(text.length, 4);
        const all = [body, Buffer.concat([cut, text])];
        for (const [k, part] of all.entries()) {
          for (let o = 0; o < part.length;) {
            const n = 1 + Math.floor(Math.random() * 300_000);
            const ok = send(part.subarray(o, o + n), k === 0);
            o += n;
            if (!ok) await new Promise((r) => socket.once('drain', r));
          }
        }
      }
      finish({ hash: hash.digest('hex'), length });
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve({ server, expected }));
  });
}

describe('zero-copy forwarding with reused read buffers', () => {
  test('a long stream arrives byte for byte, cut texts removed, while the browser stalls', async () => {
    const marker = `clip-${randomBytes(6).toString('hex')}`;
    const socketPath = join(xvnc.dir, 'pushing.sock');
    const { server, expected } = await startPushingServer(socketPath, 160, marker);
    try {
      const { ws } = await start({ target: `unix:${socketPath}` });
      const client = await mustOpen(`${ws}?ticket=${ticket()}`);
      const hash = createHash('sha256');
      // The version string can arrive with the handshake response, before any handler here;
      // the server sends nothing more until it is answered.
      const version = await client.next();
      hash.update(version);
      let sawMarker = false;
      let bytes = version.length;
      client.ws.on('message', (d: Buffer) => {
        hash.update(d);
        bytes += d.length;
        if (d.includes(marker)) sawMarker = true;
      });
      const raw = (client.ws as unknown as { _socket: Socket })._socket;
      for (const reply of ['RFB 003.008\n', '\x01', '\x01']) {
        await new Promise((r) => setTimeout(r, 50));
        client.ws.send(Buffer.from(reply, 'latin1'));
      }
      // Stall the browser now and then so that frames queue behind unfinished writes while
      // the proxy keeps reading into fresh (and reused) buffers.
      const stalls = setInterval(() => {
        raw.pause();
        setTimeout(() => raw.resume(), 150);
      }, 400);
      let sent: { hash: string; length: number };
      try {
        sent = await expected;
        await waitFor(() => bytes >= sent.length, 'the whole stream', 60_000);
      } finally {
        clearInterval(stalls);
      }
      expect(bytes).toBe(sent.length);
      expect(hash.digest('hex')).toBe(sent.hash);
      expect(sawMarker).toBe(false);
      expect(bytes).toBeGreaterThan(48 * 1024 * 1024);
      expect(pooledSlabs()).toBeGreaterThan(0);
      client.ws.terminate();
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 90_000);
});

describe('page and metrics', () => {
  test('the page is served with a strict CSP and the clipboard permissions off', async () => {
    const { base } = await start();
    for (const path of ['/', '/vnc.html']) {
      const res = await fetch(`http://${base}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(res.headers.get('permissions-policy')).toBe('clipboard-read=(), clipboard-write=()');
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(await res.text()).toContain('app.js');
    }
    const rfb = await fetch(`http://${base}/novnc/core/rfb.js`);
    expect(rfb.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await rfb.text()).toContain('export default class RFB');
    const pako = await fetch(`http://${base}/novnc/vendor/pako/lib/zlib/inflate.js`);
    expect(pako.status).toBe(200);
    for (const path of [
      '/novnc/package.json',
      '/../package.json',
      '/novnc/core/../../package.json',
      '/app.ts',
    ]) {
      expect((await fetch(`http://${base}${path}`)).status).toBe(404);
    }
    expect((await fetch(`http://${base}/`, { method: 'POST' })).status).toBe(405);
  });

  test('metrics count connections, bytes and refusals', async () => {
    const { base, ws } = await start();
    const opened = await mustOpen(`${ws}?ticket=${ticket()}`);
    await opened.next();
    opened.ws.terminate();
    await openWs(ws);
    const text = await (await fetch(`http://${base}/metrics`)).text();
    expect(text).toMatch(/^desktop_proxy_connections_total 1$/m);
    expect(text).toMatch(/^desktop_proxy_bytes_total\{direction="server-to-client"\} 12$/m);
    expect(text).toMatch(/^desktop_proxy_refusals_total\{reason="no-credentials"\} 1$/m);
  });
});

describe('TLS', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dp-tls-'));
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('serves the page over HTTPS and the desktop over WSS', async () => {
    const cert = await readFile(join(dir, 'cert.pem'));
    const { ws, base } = await start({
      tls: { cert, key: await readFile(join(dir, 'key.pem')) },
    });
    const status = await new Promise<number>((resolve, reject) =>
      httpsRequest(`https://${base}/`, { ca: cert }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end(),
    );
    expect(status).toBe(200);
    const opened = await mustOpen(`${ws.replace('ws:', 'wss:')}?ticket=${ticket()}`, ['binary'], {
      ca: cert,
    });
    expect((await opened.next()).toString('latin1')).toMatch(/^RFB 003/);
    opened.ws.terminate();
  });
});
