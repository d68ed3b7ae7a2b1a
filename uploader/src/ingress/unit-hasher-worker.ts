/**
 * Thread of UnitHasher: hashes each unit it is handed and hands the buffer back with the
 * digest, so the ingress's event loop only copies bytes and never hashes them.
 */
import { createHash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

export interface HashJob {
  id: number;
  buf: ArrayBuffer;
  length: number;
}

export interface HashDone {
  id: number;
  buf: ArrayBuffer;
  hash: string;
}

parentPort!.on('message', (job: HashJob) => {
  const hash = createHash('sha256')
    .update(new Uint8Array(job.buf, 0, job.length))
    .digest('hex');
  const done: HashDone = { id: job.id, buf: job.buf, hash };
  parentPort!.postMessage(done, [job.buf]);
});
