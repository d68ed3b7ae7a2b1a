/** Reading the secrets `tre-crypt` takes: a passphrase file and a hex master key on stdin. */
import { open } from 'node:fs/promises';
import { KEY_LEN } from '../cryptocore.js';
import { InvalidArgumentError } from '../errors.js';

/** gocryptfs's limit on passphrases. */
export const MAX_PASSPHRASE_LEN = 2048;

/**
 * The passphrase in `path` exactly as `gocryptfs -passfile` reads it: the first line without
 * its newline; an empty first line or one over 2048 bytes is an error. Later lines are ignored.
 */
export async function readPassFile(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(MAX_PASSPHRASE_LEN + 2);
  let n: number;
  try {
    ({ bytesRead: n } = await fh.read(buf, 0, buf.length, 0));
  } finally {
    await fh.close();
  }
  const end = buf.subarray(0, n).indexOf(0x0a);
  const line = Buffer.from(buf.subarray(0, end === -1 ? n : end));
  buf.fill(0);
  if (line.length === 0)
    throw new InvalidArgumentError(`passphrase file ${path} has an empty first line`);
  if (line.length > MAX_PASSPHRASE_LEN) {
    line.fill(0);
    throw new InvalidArgumentError(
      `passphrase in ${path} is longer than ${MAX_PASSPHRASE_LEN} bytes`,
    );
  }
  return line;
}

/**
 * A 32-byte master key from hex text: plain (64 digits) or as gocryptfs prints it, in groups
 * joined by dashes, possibly over several lines. The message of a refusal never echoes input.
 */
export function parseMasterKeyHex(text: string): Buffer {
  const hex = text.replace(/[\s-]/g, '');
  if (!/^[0-9a-fA-F]*$/.test(hex) || hex.length !== KEY_LEN * 2) {
    throw new InvalidArgumentError(
      `the master key must be ${KEY_LEN * 2} hex digits (dashes and whitespace allowed)`,
    );
  }
  return Buffer.from(hex, 'hex');
}

/** All of stdin (bounded: a master key is short, anything longer is a mistake). */
export async function readStdin(limit = 4096): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit) throw new InvalidArgumentError(`more than ${limit} bytes on stdin`);
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}
