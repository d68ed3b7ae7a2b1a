/**
 * Worker thread that makes fresh file keys: a random file ID and DEK, the DEK wrapped to the
 * project's public key. Each wrap is an X25519 key generation, a DH and an HPKE seal, about a
 * millisecond of CPU; on the daemon's main thread that stalled every FUSE request queued
 * behind a pool refill. The DEKs travel back to the daemon over the worker's message port
 * (process memory only) and this thread's copies are zeroed once posted.
 */
import { randomFillSync } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { FILE_ID_LEN, KEY_LEN, wrapKey, type PublicKey, type WrappedKey } from '@tre/crypto';
import { dekContext } from '@tre/crypto';
import { fileIdHex } from './key-source.js';

export interface DekRequest {
  id: number;
  count: number;
  projectId: string;
  recipient: PublicKey;
}

export interface FreshDek {
  fileId: Uint8Array;
  dek: Uint8Array;
  wrapped: WrappedKey;
}

export type DekReply = { id: number; keys: FreshDek[] } | { id: number; error: string };

parentPort?.on('message', (req: DekRequest) => {
  void make(req).then(
    (keys) => {
      parentPort!.postMessage({ id: req.id, keys } satisfies DekReply);
      for (const k of keys) k.dek.fill(0);
    },
    (err: unknown) => parentPort!.postMessage({ id: req.id, error: (err as Error).message }),
  );
});

async function make(req: DekRequest): Promise<FreshDek[]> {
  const out: FreshDek[] = [];
  for (let i = 0; i < req.count; i++) {
    // Own buffers, not slices of Node's shared pool: a posted view clones its whole buffer.
    const fileId = randomFillSync(new Uint8Array(FILE_ID_LEN));
    const dek = randomFillSync(new Uint8Array(KEY_LEN));
    const wrapped = await wrapKey(dek, req.recipient, dekContext(req.projectId, fileIdHex(fileId)));
    out.push({ fileId, dek, wrapped });
  }
  return out;
}
