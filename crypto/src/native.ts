/**
 * The optional native engine for content blocks (native/content_gcm.c): AES-256-GCM over a run
 * of gocryptfs blocks in one call, with one OpenSSL context per key that only takes a new IV
 * per block. Node's own cipher API needs a createCipheriv per 4 KiB block, which caps it far
 * below OpenSSL's speed. Both engines produce the same bytes; the pure-JS one is used when the
 * addon is not built, or when TRE_CRYPTO_NATIVE=0.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type ContentEngine = 'native' | 'js';

declare const nativeKeyBrand: unique symbol;
/** An opaque handle to a keyed OpenSSL context pair, owned by one thread. */
export interface NativeKey {
  readonly [nativeKeyBrand]: true;
}

export interface NativeContentGcm {
  createKey(subkey: Uint8Array): NativeKey;
  destroyKey(key: NativeKey): void;
  /** Bytes written; nonces (16 per block) or null for fresh random ones. */
  seal(
    key: NativeKey,
    fileId: Uint8Array,
    firstBlockNo: number,
    plain: Uint8Array,
    out: Uint8Array,
    outOffset: number,
    nonces: Uint8Array | null,
  ): number;
  /** Bytes written, or -(2 * i + kind + 1) for block i failing (kind 0: tag, 1: zero nonce). */
  open(
    key: NativeKey,
    fileId: Uint8Array,
    firstBlockNo: number,
    cipherText: Uint8Array,
    out: Uint8Array,
    outOffset: number,
  ): number;
}

/** Same path from src/ (tests) and from dist/ (the package): both sit beside build/. */
const ADDON = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  'build',
  'Release',
  'content_gcm.node',
);

function load(): { addon?: NativeContentGcm; reason?: string } {
  if (!existsSync(ADDON)) return { reason: `the native addon is not built (${ADDON})` };
  try {
    const mod = { exports: {} as NativeContentGcm };
    process.dlopen(mod, ADDON);
    return { addon: mod.exports };
  } catch (err) {
    return { reason: `the native addon failed to load: ${(err as Error).message}` };
  }
}

const loaded = load();

/** The addon, or undefined with the reason in nativeContentStatus(). */
export const nativeContentGcm: NativeContentGcm | undefined = loaded.addon;

export function nativeContentStatus(): { available: boolean; reason?: string } {
  return loaded.addon !== undefined
    ? { available: true }
    : { available: false, reason: loaded.reason ?? 'unknown' };
}

/** The engine new ContentCipher objects use: native when built, unless TRE_CRYPTO_NATIVE=0. */
export function defaultContentEngine(): ContentEngine {
  return loaded.addon !== undefined && process.env.TRE_CRYPTO_NATIVE !== '0' ? 'native' : 'js';
}
