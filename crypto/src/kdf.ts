import { scrypt } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  r: number;
  p: number;
}

/** gocryptfs's defaults (scrypt N=2^16, r=8, p=1), used for volume configs and key files alike. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 16, r: 8, p: 1 };

/** Refuses parameters that are too weak to protect a key or so large they exhaust memory. */
export function checkScryptParams({ N, r, p }: ScryptParams): void {
  const log2N = Math.log2(N);
  if (!Number.isInteger(log2N) || log2N < 10 || log2N > 28) {
    throw new InvalidArgumentError(`scrypt N must be a power of two between 2^10 and 2^28`);
  }
  if (!Number.isInteger(r) || r < 1 || r > 64 || !Number.isInteger(p) || p < 1 || p > 16) {
    throw new InvalidArgumentError('scrypt r must be 1..64 and p 1..16');
  }
}

export function scryptKey(
  passphrase: Uint8Array | string,
  salt: Uint8Array,
  params: ScryptParams,
  keyLen: number,
): Promise<Buffer> {
  checkScryptParams(params);
  const maxmem = 128 * params.N * params.r * params.p + 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(passphrase, salt, keyLen, { ...params, maxmem }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}
