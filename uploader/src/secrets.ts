/**
 * Passphrases and raw keys come from a file descriptor or an interactive prompt, never from
 * argv or the environment, and are kept in buffers that the caller wipes.
 */
import { readSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { EXIT, TreError } from './errors.js';

/** Reads a descriptor to its end (or `max` bytes); one trailing newline is dropped. */
export function readFd(fd: number, max = 64 * 1024): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  const buf = Buffer.alloc(4096);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') continue;
      if (code === 'EOF') break;
      throw new TreError(EXIT.usage, `cannot read file descriptor ${fd}: ${code ?? 'error'}`);
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
    total += n;
    if (total > max)
      throw new TreError(EXIT.usage, `file descriptor ${fd} holds more than ${max} bytes`);
  }
  buf.fill(0);
  let out = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  if (out.length > 0 && out[out.length - 1] === 0x0a) {
    const trimmed = Buffer.from(out.subarray(0, out[out.length - 2] === 0x0d ? -2 : -1));
    out.fill(0);
    out = trimmed;
  }
  return out;
}

/** Prompts on the terminal without echo. */
export async function promptHidden(prompt: string): Promise<Buffer> {
  if (!process.stdin.isTTY) {
    throw new TreError(
      EXIT.usage,
      'no terminal to ask for the passphrase; pass it on a file descriptor with --passphrase-fd',
    );
  }
  process.stderr.write(prompt);
  const muted = new Writable({ write: (_c, _e, cb) => cb() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  try {
    const line = await new Promise<string>((resolve) => rl.question('', resolve));
    return Buffer.from(line, 'utf8');
  } finally {
    rl.close();
    process.stderr.write('\n');
  }
}

export async function passphrase(fd: number | undefined, prompt: string): Promise<Buffer> {
  const p = fd !== undefined ? readFd(fd) : await promptHidden(prompt);
  if (p.length === 0) throw new TreError(EXIT.usage, 'the passphrase is empty');
  return p;
}

/** A 32-byte key given as 64 hex digits (dashes allowed, as gocryptfs prints master keys). */
export function parseHexKey(text: Buffer): Buffer {
  const hex = text.toString('latin1').replace(/[-\s]/g, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new TreError(EXIT.usage, 'the master key must be 64 hex digits');
  }
  return Buffer.from(hex, 'hex');
}
