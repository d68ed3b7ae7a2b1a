/**
 * The member's KEK private key arrives on an inherited file descriptor (`--key-fd N`) or on
 * stdin, never in argv, the environment or a file, and is read once until EOF:
 *
 *   {"kem": "x25519", "privateKey": "<unpadded base64url of the 32-byte private key>",
 *    "kmsToken": "<the member's hub API token, for --kms https://…>"}
 *
 * The read buffer is zeroed once parsed; the key lives only in the returned KeyPair.
 */
import { closeSync, readSync } from 'node:fs';
import { isKemName, publicKeyFromPrivate, type KeyPair } from '@tre/crypto';
import { KeyInputError } from './errors.js';

const MAX_INPUT = 64 * 1024;

/** Reads everything from `fd` until EOF (blocking: this runs once, before mounting). */
export function readAllFromFd(fd: number): Buffer {
  const buf = Buffer.alloc(MAX_INPUT);
  let len = 0;
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, len, buf.length - len, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') continue;
      if (code === 'EOF') break;
      throw new KeyInputError(`cannot read the key from file descriptor ${fd}: ${code ?? err}`);
    }
    if (n === 0) break;
    len += n;
    if (len === buf.length) {
      buf.fill(0);
      throw new KeyInputError(`the key input on fd ${fd} is larger than ${MAX_INPUT} bytes`);
    }
  }
  const out = Buffer.from(buf.subarray(0, len));
  buf.fill(0);
  return out;
}

export interface KeyInput {
  kek: KeyPair;
  kmsToken?: string;
}

/** Parses the key input (see the module comment) and zeroes `input`. */
export async function parseKeyInput(input: Buffer): Promise<KeyInput> {
  try {
    if (input.length === 0) {
      throw new KeyInputError('no key was handed over (empty input on the key descriptor)');
    }
    let obj: unknown;
    try {
      obj = JSON.parse(input.toString('utf8'));
    } catch {
      throw new KeyInputError('the key input is not JSON {"kem": ..., "privateKey": ...}');
    }
    const rec = obj as { kem?: unknown; privateKey?: unknown; kmsToken?: unknown };
    if (typeof obj !== 'object' || obj === null || !isKemName(rec.kem)) {
      throw new KeyInputError('the key input needs "kem": "x25519" or "x-wing"');
    }
    if (typeof rec.privateKey !== 'string' || !/^[A-Za-z0-9_-]+$/.test(rec.privateKey)) {
      throw new KeyInputError('the key input needs "privateKey" as unpadded base64url');
    }
    if (rec.kmsToken !== undefined && typeof rec.kmsToken !== 'string') {
      throw new KeyInputError('"kmsToken" must be a string');
    }
    const priv = Buffer.from(rec.privateKey, 'base64url');
    try {
      const kek = await publicKeyFromPrivate(rec.kem, priv);
      return rec.kmsToken ? { kek, kmsToken: rec.kmsToken } : { kek };
    } catch {
      throw new KeyInputError(`the key input does not hold a valid ${rec.kem} private key`);
    } finally {
      priv.fill(0);
    }
  } finally {
    input.fill(0);
  }
}

export async function readKeyInput(fd: number): Promise<KeyInput> {
  const input = readAllFromFd(fd);
  if (fd > 2) {
    try {
      closeSync(fd);
    } catch {
      // Already closed by the parent's side of a pipe: nothing to release.
    }
  }
  return parseKeyInput(input);
}
