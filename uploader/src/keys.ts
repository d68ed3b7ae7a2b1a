/**
 * The user's KEK key file: created by `tre keygen`, opened with its passphrase. Its default
 * place is ~/.config/tre/kek.json (mode 0600).
 */
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  WrongPassphraseError,
  decryptKeyFile,
  encryptKeyFile,
  generateKeyPair,
  parseKeyFile,
} from '@tre/crypto';
import type { KeyFile, KeyPair, KemName } from '@tre/crypto';
import { EXIT, TreError } from './errors.js';

export function defaultKeyFile(): string {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'tre', 'kek.json');
}

export async function readKeyFile(path: string): Promise<KeyFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new TreError(EXIT.usage, `no key file at ${path}; create one with "tre keygen"`);
  }
  try {
    return parseKeyFile(text);
  } catch (e) {
    throw new TreError(EXIT.usage, `${path} is not a tre key file: ${(e as Error).message}`);
  }
}

export async function openKeyFile(path: string, pass: Buffer): Promise<KeyPair> {
  const file = await readKeyFile(path);
  try {
    return await decryptKeyFile(file, pass);
  } catch (e) {
    if (e instanceof WrongPassphraseError) throw new TreError(EXIT.wrongKey, e.message);
    throw e;
  } finally {
    pass.fill(0);
  }
}

/** Creates a key file; refuses to overwrite one. */
export async function createKeyFile(
  path: string,
  pass: Buffer,
  kem: KemName,
  scrypt?: { N: number; r: number; p: number },
): Promise<KeyFile> {
  const kp = await generateKeyPair(kem);
  try {
    const file = await encryptKeyFile(kp, pass, scrypt ? { scrypt } : {});
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    try {
      await writeFile(path, JSON.stringify(file, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TreError(EXIT.refusedInput, `${path} exists; a key file is never overwritten`);
      }
      throw e;
    }
    return file;
  } finally {
    kp.privateKey.fill(0);
    pass.fill(0);
  }
}
