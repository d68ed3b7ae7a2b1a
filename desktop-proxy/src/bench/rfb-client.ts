import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import WebSocket from 'ws';

/** A byte stream to a VNC server: directly over a socket or through a WebSocket proxy. */
export interface Transport {
  write(data: Buffer): void;
  onData(handler: (chunk: Buffer) => void): void;
  close(): void;
  /** WebSocket frames received so far (WebSocket transports only). */
  frames?(): number;
}

// The viewer reads into one reused 1 MiB buffer per connection (Node's default is a fresh
// 64 KiB buffer per read): fewer reads and no allocation per read, so that the viewer's own
// cost, the same whichever proxy it reads from, weighs less in what the benchmark measures.
// Whatever outlives a read (queued handshake bytes, split headers) is copied.
const VIEWER_READ_SIZE = 1024 * 1024;

function readInto(deliver: (chunk: Buffer) => void) {
  const buffer = Buffer.allocUnsafe(VIEWER_READ_SIZE);
  return {
    buffer,
    callback: (bytes: number) => {
      deliver(buffer.subarray(0, bytes));
      return true;
    },
  };
}

export function unixTransport(path: string): Promise<Transport> {
  return new Promise((resolve, reject) => {
    let handler: ((chunk: Buffer) => void) | undefined;
    const early: Buffer[] = [];
    const socket = connect({
      path,
      onread: readInto((b) => (handler ? handler(b) : early.push(Buffer.from(b)))),
    });
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.once('connect', () =>
      resolve({
        write: (d) => void socket.write(d),
        onData: (h) => {
          handler = h;
          for (const b of early.splice(0)) h(b);
        },
        close: () => socket.destroy(),
      }),
    );
  });
}

export function wsTransport(url: string): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['binary'], { perMessageDeflate: false });
    // Frames may arrive before the caller attaches its handler; queue them until it does.
    let handler: ((chunk: Buffer) => void) | undefined;
    const early: Buffer[] = [];
    ws.on('message', (d: Buffer) => (handler ? handler(d) : early.push(d)));
    ws.once('error', reject);
    ws.once('open', () =>
      resolve({
        write: (d) => ws.send(d),
        onData: (h) => {
          handler = h;
          for (const d of early.splice(0)) h(d);
        },
        close: () => ws.terminate(),
      }),
    );
  });
}

/**
 * A lean WebSocket client for measurements: it hands each frame's payload on as slices of the
 * socket's reads (the `ws` client joins the pieces of every message into one buffer first, a
 * copy per byte that would be counted against whichever proxy is being measured). Binary
 * frames only; a close frame or anything unexpected ends the connection.
 */
export function leanWsTransport(url: string): Promise<Transport> {
  const { hostname, port, pathname } = new URL(url);
  const key = randomBytes(16).toString('base64');
  const accept = createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
    .digest('base64');
  return new Promise((resolve, reject) => {
    const socket: Socket = connect({
      host: hostname,
      port: Number(port),
      onread: readInto((chunk) => onRead(chunk)),
    });
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.once('connect', () =>
      socket.write(
        `GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
          'Sec-WebSocket-Protocol: binary\r\n\r\n',
      ),
    );
    let handler: ((chunk: Buffer) => void) | undefined;
    const early: Buffer[] = [];
    const deliver = (b: Buffer) => (handler ? handler(b) : early.push(Buffer.from(b)));
    let head: Buffer | undefined = Buffer.alloc(0);
    // Frame parser state: bytes of the current header gathered, payload bytes still to come.
    let header = Buffer.alloc(0);
    let payloadLeft = 0;
    let opcode = 0;
    let frames = 0;
    const onFrames = (chunk: Buffer) => {
      let i = 0;
      while (i < chunk.length) {
        if (payloadLeft > 0) {
          const n = Math.min(payloadLeft, chunk.length - i);
          if (opcode === 2 || opcode === 0) deliver(chunk.subarray(i, i + n));
          i += n;
          payloadLeft -= n;
          continue;
        }
        const len7 = header.length >= 2 ? (header[1] as number) & 0x7f : 0;
        const need = header.length < 2 ? 2 : len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
        if (header.length < need) {
          const n = Math.min(need - header.length, chunk.length - i);
          header = Buffer.concat([header, chunk.subarray(i, i + n)]);
          i += n;
          if (header.length < need || need === 2) continue;
        }
        opcode = (header[0] as number) & 0x0f;
        if ((header[1] as number) & 0x80) throw new Error('server frames must not be masked');
        payloadLeft =
          len7 === 126
            ? header.readUInt16BE(2)
            : len7 === 127
              ? Number(header.readBigUInt64BE(2))
              : len7;
        header = Buffer.alloc(0);
        frames += 1;
        if (opcode === 8) {
          socket.destroy();
          return;
        }
        if (opcode !== 2 && opcode !== 0) throw new Error(`unexpected WebSocket opcode ${opcode}`);
      }
    };
    const onRead = (chunk: Buffer) => {
      if (!head) return onFrames(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const response = head.subarray(0, end).toString('latin1');
      const rest = head.subarray(end + 4);
      head = undefined;
      if (!/^HTTP\/1\.1 101 /.test(response) || !response.includes(accept)) {
        socket.destroy();
        return reject(new Error(`WebSocket upgrade refused: ${response.split('\r\n')[0]}`));
      }
      resolve({
        write: (d) => {
          const mask = randomBytes(4);
          const frame = Buffer.alloc(6 + d.length);
          frame[0] = 0x82;
          frame[1] = 0x80 | d.length;
          if (d.length > 125) throw new Error('client messages of the benchmark are small');
          mask.copy(frame, 2);
          for (let k = 0; k < d.length; k++)
            frame[6 + k] = (d[k] as number) ^ (mask[k & 3] as number);
          socket.write(frame);
        },
        onData: (h) => {
          handler = h;
          for (const b of early.splice(0)) h(b);
        },
        close: () => socket.destroy(),
        frames: () => frames,
      });
      if (rest.length > 0) onFrames(rest);
    };
  });
}

/**
 * A minimal RFB 3.8 viewer for measurements: security None, Raw encoding only, 32 bpp as the
 * server offers it. It counts bytes of complete FramebufferUpdates without copying pixels.
 */
export class RfbBenchClient {
  width = 0;
  height = 0;
  private queue: Buffer[] = [];
  private queued = 0;
  private waiter: (() => void) | undefined;
  // Streaming parser state once initialised.
  private streaming = false;
  private state: 'type' | 'fbu' | 'rect' | 'pixels' = 'type';
  private rectsLeft = 0;
  private skip = 0;
  private onUpdate: (() => void) | undefined;
  bytesReceived = 0;

  constructor(readonly t: Transport) {
    t.onData((chunk) => this.push(chunk));
  }

  private push(chunk: Buffer): void {
    this.bytesReceived += chunk.length;
    if (this.streaming) return this.parse(chunk);
    this.queue.push(Buffer.from(chunk));
    this.queued += chunk.length;
    this.waiter?.();
  }

  private async read(n: number): Promise<Buffer> {
    while (this.queued < n) await new Promise<void>((r) => (this.waiter = r));
    const all = Buffer.concat(this.queue);
    this.queue = all.length > n ? [all.subarray(n)] : [];
    this.queued = all.length - n;
    return all.subarray(0, n);
  }

  async handshake(): Promise<void> {
    await this.read(12);
    this.t.write(Buffer.from('RFB 003.008\n', 'latin1'));
    const count = (await this.read(1))[0] as number;
    if (count === 0) throw new Error('server refused the connection');
    const types = await this.read(count);
    if (!types.includes(1)) throw new Error('server does not offer security type None');
    this.t.write(Buffer.from([1]));
    if ((await this.read(4)).readUInt32BE(0) !== 0) throw new Error('security failure');
    this.t.write(Buffer.from([1])); // shared
    const init = await this.read(24);
    this.width = init.readUInt16BE(0);
    this.height = init.readUInt16BE(2);
    if (init[4] !== 32) throw new Error(`expected 32 bpp, got ${init[4]}`);
    await this.read(init.readUInt32BE(20));
    const setEncodings = Buffer.alloc(8);
    setEncodings.writeUInt8(2, 0);
    setEncodings.writeUInt16BE(1, 2);
    setEncodings.writeInt32BE(0, 4); // Raw
    this.t.write(setEncodings);
    this.streaming = true;
    const rest = Buffer.concat(this.queue);
    this.queue = [];
    if (rest.length > 0) this.parse(rest);
  }

  /** Requests a non-incremental update of a region and resolves when it has fully arrived. */
  update(x = 0, y = 0, w = this.width, h = this.height): Promise<void> {
    const req = Buffer.alloc(10);
    req.writeUInt8(3, 0);
    req.writeUInt8(0, 1);
    req.writeUInt16BE(x, 2);
    req.writeUInt16BE(y, 4);
    req.writeUInt16BE(w, 6);
    req.writeUInt16BE(h, 8);
    return new Promise((resolve) => {
      this.onUpdate = resolve;
      this.t.write(req);
    });
  }

  private parse(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      switch (this.state) {
        case 'type': {
          const type = chunk[i] as number;
          i += 1;
          if (type === 0) {
            this.state = 'fbu';
          } else if (type !== 2) {
            // Only FramebufferUpdate and Bell (no payload) are expected with Raw only.
            throw new Error(`unexpected server message type ${type}`);
          }
          break;
        }
        case 'fbu':
        case 'rect': {
          // Header bytes may straddle chunks; collect them in a small buffer.
          const need = this.state === 'fbu' ? 3 : 12;
          const header = this.takeHeader(chunk, i, need);
          i = header.next;
          if (!header.bytes) break;
          if (this.state === 'fbu') {
            this.rectsLeft = header.bytes.readUInt16BE(1);
          } else {
            const w = header.bytes.readUInt16BE(4);
            const h = header.bytes.readUInt16BE(6);
            const enc = header.bytes.readInt32BE(8);
            if (enc !== 0) throw new Error(`unexpected encoding ${enc}`);
            this.rectsLeft -= 1;
            this.skip = w * h * 4;
            this.state = 'pixels';
            if (this.skip > 0) break;
          }
          this.afterRect();
          break;
        }
        case 'pixels': {
          const n = Math.min(this.skip, chunk.length - i);
          i += n;
          this.skip -= n;
          if (this.skip === 0) this.afterRect();
          break;
        }
      }
    }
  }

  private partial: Buffer[] = [];
  private partialLen = 0;

  private takeHeader(chunk: Buffer, i: number, need: number): { next: number; bytes?: Buffer } {
    const n = Math.min(need - this.partialLen, chunk.length - i);
    this.partial.push(Buffer.from(chunk.subarray(i, i + n)));
    this.partialLen += n;
    if (this.partialLen < need) return { next: i + n };
    const bytes = Buffer.concat(this.partial);
    this.partial = [];
    this.partialLen = 0;
    return { next: i + n, bytes };
  }

  private afterRect(): void {
    if (this.rectsLeft > 0) {
      this.state = 'rect';
      return;
    }
    this.state = 'type';
    const done = this.onUpdate;
    this.onUpdate = undefined;
    done?.();
  }

  close(): void {
    this.t.close();
  }
}
