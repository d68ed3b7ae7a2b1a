import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';

/**
 * A VNC server that does nothing but answer: security None, a WxH 32 bpp desktop, and every
 * FramebufferUpdateRequest answered at once with one Raw rectangle of the requested region
 * from a prebuilt frame. Measuring a proxy in front of it isolates the proxy's own cost.
 */
export function startSyntheticServer(path: string, width: number, height: number): Promise<Server> {
  const frame = randomBytes(width * height * 4);
  const pixelFormat = Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
  const name = Buffer.from('synthetic', 'latin1');
  const serverInit = Buffer.alloc(24 + name.length);
  serverInit.writeUInt16BE(width, 0);
  serverInit.writeUInt16BE(height, 2);
  pixelFormat.copy(serverInit, 4);
  serverInit.writeUInt32BE(name.length, 20);
  name.copy(serverInit, 24);
  const full = rawUpdate(frame, width, 0, 0, width, height);

  const server = createServer((socket) => {
    socket.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let phase: 'version' | 'security' | 'init' | 'messages' = 'version';
    socket.write('RFB 003.008\n');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      for (;;) {
        if (phase === 'version') {
          if (buf.length < 12) return;
          buf = buf.subarray(12);
          socket.write(Buffer.from([1, 1]));
          phase = 'security';
        } else if (phase === 'security') {
          if (buf.length < 1) return;
          buf = buf.subarray(1);
          socket.write(Buffer.alloc(4));
          phase = 'init';
        } else if (phase === 'init') {
          if (buf.length < 1) return;
          buf = buf.subarray(1);
          socket.write(serverInit);
          phase = 'messages';
        } else {
          if (buf.length < 1) return;
          const type = buf[0];
          let size: number;
          if (type === 0) size = 20;
          else if (type === 2) {
            if (buf.length < 4) return;
            size = 4 + 4 * buf.readUInt16BE(2);
          } else if (type === 3) size = 10;
          else if (type === 4) size = 8;
          else if (type === 5) size = 6;
          else return void socket.destroy();
          if (buf.length < size) return;
          if (type === 3) {
            const x = buf.readUInt16BE(2);
            const y = buf.readUInt16BE(4);
            const w = buf.readUInt16BE(6);
            const h = buf.readUInt16BE(8);
            socket.write(
              x === 0 && y === 0 && w === width && h === height
                ? full
                : rawUpdate(frame, width, x, y, Math.min(w, width - x), Math.min(h, height - y)),
            );
          }
          buf = buf.subarray(size);
        }
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

function rawUpdate(frame: Buffer, stride: number, x: number, y: number, w: number, h: number) {
  const out = Buffer.alloc(4 + 12 + w * h * 4);
  out.writeUInt8(0, 0);
  out.writeUInt16BE(1, 2);
  out.writeUInt16BE(x, 4);
  out.writeUInt16BE(y, 6);
  out.writeUInt16BE(w, 8);
  out.writeUInt16BE(h, 10);
  out.writeInt32BE(0, 12);
  for (let row = 0; row < h; row++) {
    const from = ((y + row) * stride + x) * 4;
    frame.copy(out, 16 + row * w * 4, from, from + w * 4);
  }
  return out;
}
