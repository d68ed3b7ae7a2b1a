/**
 * `tre download`: the requester's side of a released egress request. The KMS gives the frozen
 * manifest and each file's DEK wrapped to the requester's KEK; the ingress service serves the
 * ciphertext from the project tree (only to the requester, only while released). Each file's
 * ciphertext is checked against the manifest's size and SHA-256 before anything is decrypted,
 * and the plaintext appears under its final name whole or not at all.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, open, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import {
  HEADER_LEN,
  NameTransform,
  cipherSizeToPlainSize,
  createDecryptStream,
  egressContext,
  tempSibling,
  unwrapKey,
  validatePlainName,
  writeFileAtomic,
} from '@tre/crypto';
import type { KeyPair, WrappedKey } from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service/client';
import { EXIT, TreError } from './errors.js';
import { IngressHttpError } from './ingress-client.js';
import type { IngressClient } from './ingress-client.js';
import type { Progress } from './progress.js';
import { kmsFailure, unlockProject } from './upload-keys.js';

export interface DownloadRun {
  project: string;
  requestId: number;
  /** Folder the manifest's paths are written below. */
  out: string;
  /** Replace files that exist already. */
  force: boolean;
  /** Files fetched at the same time. */
  jobs: number;
  kms: KmsClient;
  ingress: IngressClient;
  kek: KeyPair;
  progress: Progress;
  signal?: AbortSignal;
}

export interface DownloadSummary {
  files: number;
  bytes: number;
}

interface ReleasedFile {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  wrapped: WrappedKey;
}

/** Splits a manifest path into checked plaintext components; nothing may leave `out`. */
export function manifestPath(path: string): string[] {
  const parts = path.split('/');
  for (const p of parts) {
    if (p === '' || p === '.' || p === '..') {
      throw new TreError(EXIT.refusedInput, `the manifest path ${JSON.stringify(path)} is unsafe`);
    }
    try {
      validatePlainName(p);
    } catch (e) {
      throw new TreError(
        EXIT.refusedInput,
        `the manifest path ${JSON.stringify(path)}: ${(e as Error).message}`,
      );
    }
  }
  return parts;
}

function ingressFailure(e: unknown, what: string): TreError {
  if (e instanceof IngressHttpError) {
    if (e.code === 'revoked' || e.code === 'not_released') {
      return new TreError(EXIT.notReleased, `${what}: ${e.message}`);
    }
    if (e.code === 'changed') return new TreError(EXIT.verification, `${what}: ${e.message}`);
    return new TreError(e.exitCode, `${what}: ${e.message}`);
  }
  return e instanceof TreError
    ? e
    : new TreError(EXIT.unavailable, `${what}: ${(e as Error).message}`);
}

/** Asks the KMS for the request's state first, so "not yet" and "no longer" read clearly. */
async function release(o: DownloadRun): Promise<ReleasedFile[]> {
  let view;
  try {
    view = await o.kms.egress(o.project, o.requestId);
  } catch (e) {
    throw kmsFailure(e, `cannot read egress request ${o.requestId} of ${o.project}`);
  }
  if (view.state === 'revoked') {
    throw new TreError(
      EXIT.notReleased,
      `egress request ${o.requestId} was revoked: its files can no longer be downloaded`,
    );
  }
  if (view.state !== 'approved' && view.state !== 'released') {
    throw new TreError(
      EXIT.notReleased,
      `egress request ${o.requestId} is ${view.state}, not released: it can be downloaded once approved`,
    );
  }
  try {
    return (await o.kms.releaseEgress(o.project, o.requestId)).files;
  } catch (e) {
    const k = e as { name?: string; reason?: string; message?: string };
    if (k.name === 'KmsClientError' && k.reason === 'wrong_state') {
      throw new TreError(EXIT.notReleased, `egress request ${o.requestId}: ${k.message ?? ''}`);
    }
    throw kmsFailure(e, `the KMS refused the release of egress request ${o.requestId}`);
  }
}

/** Maps manifest paths to stored cipher paths, one directory level at a time. */
class CipherPaths {
  private readonly ivs = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly o: DownloadRun,
    private readonly names: NameTransform,
  ) {}

  private iv(dir: string): Promise<Buffer> {
    let p = this.ivs.get(dir);
    if (!p) {
      p = this.o.ingress.egressDiriv(this.o.project, this.o.requestId, dir);
      this.ivs.set(dir, p);
    }
    return p;
  }

  async of(parts: string[]): Promise<string> {
    let dir = '';
    for (const part of parts) {
      const entry = this.names.encryptEntryName(part, await this.iv(dir)).entry;
      dir = dir === '' ? entry : `${dir}/${entry}`;
    }
    return dir;
  }
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** Streams the ciphertext to `tmp`, hashing it; returns its size and SHA-256. */
async function fetchCiphertext(
  o: DownloadRun,
  f: ReleasedFile,
  cipherPath: string,
  tmp: string,
  onBytes: (n: number) => void,
): Promise<{ size: number; sha256: string }> {
  const res = await o.ingress.egressFile(o.project, o.requestId, f.fileId, cipherPath, o.signal);
  if (!res.body) throw new TreError(EXIT.unavailable, `${f.path}: empty response`);
  const hash = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      // More than the manifest says is already a mismatch: stop reading.
      if (size > f.size)
        cb(new TreError(EXIT.verification, `${f.path}: longer than the manifest says`));
      else {
        onBytes(size);
        cb(null, chunk);
      }
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
      tap,
      createWriteStream(tmp, { flags: 'wx', mode: 0o600 }),
      ...(o.signal ? [{ signal: o.signal }] : []),
    );
  } catch (e) {
    if (e instanceof TreError) throw e;
    if (o.signal?.aborted) throw new TreError(EXIT.interrupted, 'interrupted');
    throw new TreError(
      EXIT.unavailable,
      `${f.path}: the download broke off (${(e as Error).message}); run the same command again`,
    );
  }
  return { size, sha256: hash.digest('hex') };
}

async function headerFileId(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(HEADER_LEN);
    const { bytesRead } = await fh.read(head, 0, HEADER_LEN, 0);
    return bytesRead === HEADER_LEN ? head.subarray(2).toString('hex') : '';
  } finally {
    await fh.close();
  }
}

async function downloadOne(
  o: DownloadRun,
  f: ReleasedFile,
  parts: string[],
  cipherPaths: CipherPaths,
  me: string,
): Promise<void> {
  const dest = join(o.out, ...parts);
  await mkdir(dirname(dest), { recursive: true });
  let cipherPath: string;
  try {
    cipherPath = await cipherPaths.of(parts);
  } catch (e) {
    throw ingressFailure(e, f.path);
  }
  const tmp = tempSibling(dest);
  o.progress.fileStarted(f.fileId, f.path, f.size);
  try {
    let got;
    try {
      got = await fetchCiphertext(o, f, cipherPath, tmp, (n) =>
        o.progress.fileProgress(f.fileId, n),
      );
    } catch (e) {
      throw ingressFailure(e, f.path);
    }
    if (got.size !== f.size || got.sha256 !== f.sha256.toLowerCase()) {
      throw new TreError(
        EXIT.verification,
        `${f.path}: hash mismatch: the ciphertext (${got.size} bytes, SHA-256 ${got.sha256}) is not the one in the manifest (${f.size} bytes, ${f.sha256.toLowerCase()}); nothing was written`,
      );
    }
    if (f.size > 0 && (await headerFileId(tmp)) !== f.fileId.toLowerCase()) {
      throw new TreError(EXIT.verification, `${f.path}: the file header names another file`);
    }
    let dek: Uint8Array;
    try {
      dek = await unwrapKey(f.wrapped, o.kek, egressContext(o.project, f.fileId.toLowerCase(), me));
    } catch (e) {
      throw new TreError(
        EXIT.wrongKey,
        `${f.path}: the released key does not open with your key file: ${(e as Error).message}`,
      );
    }
    try {
      await writeFileAtomic(dest, (out) =>
        pipeline(
          createReadStream(tmp),
          createDecryptStream(dek),
          createWriteStream(out, { flags: 'wx', mode: 0o600 }),
        ),
      );
    } catch (e) {
      throw new TreError(
        EXIT.verification,
        `${f.path}: decryption failed (${(e as Error).message}); nothing was written`,
      );
    } finally {
      dek.fill(0);
    }
    const plainSize = (await stat(dest)).size;
    if (plainSize !== cipherSizeToPlainSize(f.size)) {
      await rm(dest, { force: true });
      throw new TreError(
        EXIT.verification,
        `${f.path}: decrypted to ${plainSize} bytes, expected ${cipherSizeToPlainSize(f.size)}`,
      );
    }
  } finally {
    await rm(tmp, { force: true });
  }
  o.progress.fileDone(f.fileId);
}

export async function runDownload(o: DownloadRun): Promise<DownloadSummary> {
  let me: string;
  try {
    me = (await o.kms.me()).username;
  } catch (e) {
    throw kmsFailure(e, 'cannot ask the KMS who you are');
  }
  const files = await release(o);
  const out = resolve(o.out);
  const planned = files.map((f) => ({ f, parts: manifestPath(f.path) }));
  const seen = new Set<string>();
  for (const { f, parts } of planned) {
    const dest = join(out, ...parts);
    if (relative(out, dest).startsWith('..' + sep)) {
      throw new TreError(EXIT.refusedInput, `the manifest path ${f.path} leaves ${out}`);
    }
    if (seen.has(dest)) throw new TreError(EXIT.refusedInput, `${f.path} is twice in the manifest`);
    seen.add(dest);
    if (!o.force && (await exists(dest))) {
      throw new TreError(
        EXIT.refusedInput,
        `${dest} exists; nothing was downloaded (use --force to replace existing files)`,
      );
    }
  }
  const { volumeKey } = await unlockProject(o.kms, o.project, o.kek);
  const names = new NameTransform(volumeKey);
  volumeKey.fill(0);
  const cipherPaths = new CipherPaths({ ...o, out }, names);
  const total = files.reduce((a, f) => a + f.size, 0);
  o.progress.start(total, 0, files.length);
  // The first failure stops the other transfers too, and every one removes its temporary file
  // before this returns, so a failed run leaves only whole, verified files behind.
  const stop = new AbortController();
  const signal = o.signal ? AbortSignal.any([o.signal, stop.signal]) : stop.signal;
  const run = { ...o, out, signal };
  const queue = [...planned];
  const worker = async (): Promise<void> => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      if (signal.aborted) return;
      try {
        await downloadOne(run, next.f, next.parts, cipherPaths, me);
      } catch (e) {
        stop.abort();
        throw e;
      }
    }
  };
  let results;
  try {
    results = await Promise.allSettled(
      Array.from({ length: Math.max(1, Math.min(o.jobs, files.length)) }, worker),
    );
  } finally {
    o.progress.stop();
  }
  const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  const first = failures.find((e) => !(e instanceof TreError && e.exitCode === EXIT.interrupted));
  if (first ?? failures[0]) throw first ?? failures[0];
  if (o.signal?.aborted) throw new TreError(EXIT.interrupted, 'interrupted');
  return { files: files.length, bytes: total };
}
