/**
 * `tre upload`: walks the sources, encrypts names and contents locally, sends ciphertext over
 * tus several files at a time, has the server verify each file's digest, registers the
 * verified files' wrapped DEKs and finally submits the ingress request. Every step is
 * recorded in the resume state first, so the same command run again continues where a
 * killed, interrupted or disconnected run stopped, without sending finished files again.
 */
import { randomBytes } from 'node:crypto';
import { ContentWorkerPool, NameTransform } from '@tre/crypto';
import { Upload } from 'tus-js-client';
import type { DetailedError } from 'tus-js-client';
import type { CipherComponent } from './cipher-names.js';
import { pathKey } from './cipher-names.js';
import { EncryptingSource } from './encrypting-source.js';
import { WholeBodyHttpStack } from './http-stack.js';
import { EXIT, TreError } from './errors.js';
import type { ChecklistInput, IngressClient } from './ingress-client.js';
import { IngressHttpError } from './ingress-client.js';
import { DIGEST_HEADER, STATE_HEADER } from './ingress/protocol.js';
import type { Progress } from './progress.js';
import type { FileState, SessionState, SessionStore } from './resume-state.js';
import { HEADER_LEN } from '@tre/crypto';
import { UNIT_CIPHER, cipherSize, fileDigest, unitCount } from './units.js';
import type { UploadKeys } from './upload-keys.js';
import { walk } from './walk.js';
import type { SourceFile } from './walk.js';

export interface UploadRun {
  paths: string[];
  project: string;
  /** Destination below the project root, plaintext components. */
  dest: string[];
  ingress: IngressClient;
  keys: UploadKeys;
  session: SessionStore;
  state: SessionState;
  /** Files uploaded at the same time. */
  jobs: number;
  /** Encryption threads (default: all cores). */
  threads?: number;
  /** Resume units per tus PATCH. */
  chunkUnits: number;
  checklist?: ChecklistInput;
  progress: Progress;
  signal?: AbortSignal;
  log: (msg: string) => void;
}

export interface UploadSummary {
  requestId: string;
  files: number;
  bytesSent: number;
  skipped: number;
  submitted: boolean;
}

const REGISTER_BATCH = 200;

function tusFailure(err: Error | DetailedError): TreError {
  const res = (err as DetailedError).originalResponse;
  if (res) {
    const status = res.getStatus();
    let message = `upload refused (HTTP ${status})`;
    try {
      const body = JSON.parse(res.getBody()) as { error?: { code?: string; message?: string } };
      if (body.error?.message) message = body.error.message;
      if (body.error?.code === 'digest_mismatch' || body.error?.code === 'not_uploading') {
        return new IngressHttpError(status, body.error.code, message);
      }
    } catch {
      // not JSON: keep the status line
    }
    return new TreError(
      status === 401 || status === 403
        ? EXIT.auth
        : status >= 500 || status === 423
          ? EXIT.unavailable
          : EXIT.failure,
      message,
    );
  }
  return new TreError(
    EXIT.unavailable,
    `upload interrupted: ${err.message}; run the same command again to resume`,
  );
}

export async function runUpload(o: UploadRun): Promise<UploadSummary> {
  if (o.state.done && o.state.requestId) {
    // Finished earlier (possibly by a run killed during its cleanup): report, send nothing.
    return {
      requestId: o.state.requestId,
      files: o.state.done.files,
      bytesSent: 0,
      skipped: o.state.done.files,
      submitted: o.state.done.submitted,
    };
  }
  const tree = await walk(o.paths);
  if (tree.refused.length > 0) {
    throw new TreError(EXIT.refusedInput, `nothing was uploaded:\n  ${tree.refused.join('\n  ')}`);
  }
  if (!o.state.requestId) {
    o.state.requestId = (await o.ingress.openRequest(o.project)).id;
    await o.session.saveSession(o.state);
  }
  const requestId = o.state.requestId;
  const names = new NameTransform(o.keys.volumeKey);
  const dirs = new Map<string, { path: CipherComponent[]; iv: Buffer }>();

  // The destination chain first, then every directory of the tree, parents before children.
  let ivs = await o.ingress.registerDir(o.project, []);
  let destPath: CipherComponent[] = [];
  for (const part of o.dest) {
    const e = names.encryptEntryName(part, ivs[ivs.length - 1]!);
    destPath = [
      ...destPath,
      { entry: e.entry, ...(e.longNameFile ? { longName: e.longNameFile } : {}) },
    ];
    ivs = await o.ingress.registerDir(o.project, destPath);
  }
  dirs.set('', { path: destPath, iv: ivs[ivs.length - 1]! });
  for (const rel of tree.dirs) {
    const cut = rel.lastIndexOf('/');
    const parent = dirs.get(cut < 0 ? '' : rel.slice(0, cut))!;
    const e = names.encryptEntryName(rel.slice(cut + 1), parent.iv);
    const path = [
      ...parent.path,
      { entry: e.entry, ...(e.longNameFile ? { longName: e.longNameFile } : {}) },
    ];
    const got = await o.ingress.registerDir(o.project, path);
    dirs.set(rel, { path, iv: got[got.length - 1]! });
  }

  const pool = new ContentWorkerPool(o.threads !== undefined ? { threads: o.threads } : {});
  const httpStack = new WholeBodyHttpStack();
  const states = new Map<string, FileState>();
  const fresh = new Set<string>();
  let totalBytes = 0;
  let doneBytes = 0;
  for (const f of tree.files) {
    const st = await prepare(o, fresh, f, names, dirs);
    states.set(f.rel, st);
    totalBytes += st.cipherSize;
    if (st.phase !== 'uploading') doneBytes += st.cipherSize;
  }
  // Every new file's ids and sealed DEK are on disk before any of its bytes leave.
  await o.session.saveFiles(
    tree.files.filter((f) => fresh.has(f.rel)).map((f) => states.get(f.rel)!),
  );
  o.progress.start(totalBytes, doneBytes, tree.files.length);

  const pendingRegistration: FileState[] = [];
  let bytesSent = 0;
  let skipped = 0;
  const flush = async (): Promise<void> => {
    const batch = pendingRegistration.splice(0);
    if (batch.length === 0) return;
    if (o.keys.register) {
      await o.keys.register(
        batch.map((s) => ({
          fileId: s.fileId,
          size: s.cipherSize,
          digest: s.digest!,
          dek: dekOf(o, s),
        })),
      );
    }
    for (const s of batch) s.phase = 'registered';
    await o.session.saveFiles(batch);
  };

  const active = new Set<Upload>();
  const onAbort = (): void => {
    for (const u of active) void u.abort();
  };
  o.signal?.addEventListener('abort', onAbort);
  try {
    const queue = [...tree.files];
    let failure: unknown;
    const worker = async (): Promise<void> => {
      for (;;) {
        if (failure !== undefined || o.signal?.aborted) return;
        const f = queue.shift();
        if (!f) return;
        const st = states.get(f.rel)!;
        try {
          if (st.phase === 'uploading') {
            bytesSent += await sendFile(
              o,
              pool,
              httpStack,
              f,
              st,
              requestId,
              active,
              !fresh.has(f.rel),
            );
          } else {
            skipped++;
            o.progress.fileDone(st.uploadId);
          }
          if (st.phase === 'verified') {
            pendingRegistration.push(st);
            if (pendingRegistration.length >= REGISTER_BATCH) await flush();
          }
        } catch (e) {
          failure ??= e;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, worker));
    if (o.signal?.aborted)
      throw new TreError(EXIT.interrupted, 'interrupted; run the same command again to resume');
    if (failure !== undefined) throw failure;
    await flush();
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    o.progress.stop();
    httpStack.close();
    await pool.destroy();
  }

  let submitted = false;
  if (o.checklist) {
    const r = await o.ingress.request(requestId);
    if (r.state === 'open') await o.ingress.submit(requestId, o.checklist);
    submitted = true;
  }
  await o.session.finish(o.state, { files: tree.files.length, submitted });
  return { requestId, files: tree.files.length, bytesSent, skipped, submitted };
}

function dekOf(o: UploadRun, st: FileState): Buffer {
  if (st.sealedDek === undefined || !o.keys.sealer) return o.keys.newDek();
  return o.keys.sealer.open(st.sealedDek, st.fileId);
}

/**
 * Loads a file's resume state, or starts a new one (new upload id, file ID and DEK), which the
 * caller records before sending anything.
 */
async function prepare(
  o: UploadRun,
  fresh: Set<string>,
  f: SourceFile,
  names: NameTransform,
  dirs: Map<string, { path: CipherComponent[]; iv: Buffer }>,
): Promise<FileState> {
  const cut = f.rel.lastIndexOf('/');
  const dir = dirs.get(cut < 0 ? '' : f.rel.slice(0, cut))!;
  let st = o.session.loadFile(f.rel);
  if (st && (st.size !== f.size || st.mtimeMs !== f.mtimeMs || st.ino !== f.ino)) {
    if (st.phase !== 'uploading') {
      throw new TreError(
        EXIT.refusedInput,
        `${f.abs} changed after it was uploaded in this session; upload the new version separately`,
      );
    }
    o.log(`${f.rel} changed since the interrupted run; sending it again from the start`);
    await o.ingress.terminate(st.uploadId).catch(() => undefined);
    st = undefined;
  }
  if (st) return st;
  fresh.add(f.rel);
  const e = names.encryptEntryName(f.rel.slice(cut + 1), dir.iv);
  const fileId = randomBytes(16).toString('hex');
  const dek = o.keys.newDek();
  const created: FileState = {
    v: 1,
    relPath: f.rel,
    size: f.size,
    mtimeMs: f.mtimeMs,
    ino: f.ino,
    uploadId: randomBytes(16).toString('hex'),
    fileId,
    ...(o.keys.sealer ? { sealedDek: o.keys.sealer.seal(dek, fileId) } : {}),
    dir: dir.path,
    entry: { entry: e.entry, ...(e.longNameFile ? { longName: e.longNameFile } : {}) },
    cipherSize: cipherSize(f.size),
    units: [],
    phase: 'uploading',
  };
  dek.fill(0);
  return created;
}

/** Sends one file over tus and has the server verify it; returns the bytes sent. */
async function sendFile(
  o: UploadRun,
  pool: ContentWorkerPool,
  httpStack: WholeBodyHttpStack,
  f: SourceFile,
  st: FileState,
  requestId: string,
  active: Set<Upload>,
  resumed: boolean,
): Promise<number> {
  if (resumed && st.units.length === unitCount(st.cipherSize) && (await verify(o, f, st, true))) {
    return 0;
  }
  const dek = dekOf(o, st);
  let sent = 0;
  try {
    o.progress.fileStarted(st.uploadId, f.rel, st.cipherSize);
    const source = new EncryptingSource({
      path: f.abs,
      plainSize: f.size,
      cipherSize: st.cipherSize,
      dek,
      fileId: Buffer.from(st.fileId, 'hex'),
      pool,
      chunkUnits: o.chunkUnits,
      onUnits: async (first, hashes) => {
        await o.session.saveUnits(st.relPath, first, hashes);
        st.units.length = Math.min(st.units.length, first);
        st.units.push(...hashes);
      },
    });
    const endpoint = o.ingress.tusEndpoint;
    // A create whose answer was lost (connection cut) is retried as a resume of that upload.
    const send = (resume: boolean): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        let startOffset = -1;
        const up = new Upload(Buffer.alloc(0), {
          endpoint,
          // A file begun in this run cannot exist on the server yet: skip the HEAD and create it.
          uploadUrl: resume ? `${endpoint}/${st.uploadId}` : null,
          uploadSize: st.cipherSize,
          chunkSize: o.chunkUnits * UNIT_CIPHER + HEADER_LEN,
          fileReader: { openFile: async () => source },
          httpStack,
          fingerprint: async () => st.uploadId,
          storeFingerprintForResuming: false,
          uploadDataDuringCreation: true,
          retryDelays: [0, 250, 1000, 3000],
          headers: { Authorization: o.ingress.authHeader() },
          metadata: {
            uploadId: st.uploadId,
            project: o.project,
            request: requestId,
            dir: pathKey(st.dir),
            entry: st.entry.entry,
            ...(st.entry.longName ? { longName: st.entry.longName } : {}),
            fileId: st.fileId,
          },
          onProgress: (bytes) => {
            if (startOffset < 0) startOffset = bytes;
            sent = bytes - startOffset;
            o.progress.fileProgress(st.uploadId, bytes);
          },
          // The last chunk carries the digest; the server then verifies and stages the file in
          // the same request instead of a separate /complete call.
          onBeforeRequest: (req) => {
            const m = req.getMethod();
            if ((m === 'PATCH' || m === 'POST') && source.finalSliced) {
              if (st.units.length === unitCount(st.cipherSize)) {
                req.setHeader(DIGEST_HEADER, fileDigest(st.cipherSize, st.units));
              }
            }
          },
          onSuccess: ({ lastResponse }) => {
            active.delete(up);
            const state = lastResponse.getHeader(STATE_HEADER);
            staged = state === 'staged' || state === 'visible';
            resolve();
          },
          onError: (err) => {
            active.delete(up);
            reject(
              o.signal?.aborted ? new TreError(EXIT.interrupted, 'interrupted') : tusFailure(err),
            );
          },
        });
        active.add(up);
        up.start();
      });
    let staged = false;
    try {
      await send(resumed);
    } catch (e) {
      if (e instanceof IngressHttpError && e.code === 'digest_mismatch') {
        await restartAfterMismatch(o, st);
        throw new TreError(EXIT.verification, `${f.rel}: ${e.message}`);
      }
      // The last chunk's answer was lost after the server had staged the file: a retry finds it
      // no longer uploading, and /complete (idempotent) says whether it is this file.
      if (!(e instanceof IngressHttpError && e.code === 'not_uploading')) throw e;
    }
    if (staged) {
      st.digest = fileDigest(st.cipherSize, st.units);
      await verified(o, st);
    } else await verify(o, f, st, false);
    return sent;
  } finally {
    dek.fill(0);
  }
}

/**
 * Has the server check the stored file against the digest of the unit hashes and stage it.
 * `probe`: the file was sent by an earlier run and may be complete (even staged) already;
 * then a server that does not have it all yet answers incomplete/not found, and false says
 * "send it".
 */
async function verify(
  o: UploadRun,
  f: SourceFile,
  st: FileState,
  probe: boolean,
): Promise<boolean> {
  st.digest = fileDigest(st.cipherSize, st.units);
  try {
    await o.ingress.complete(st.uploadId, st.digest);
  } catch (e) {
    if (
      probe &&
      e instanceof IngressHttpError &&
      (e.code === 'incomplete' || e.code === 'not_found')
    ) {
      return false;
    }
    if (e instanceof IngressHttpError && e.code === 'digest_mismatch') {
      await restartAfterMismatch(o, st);
      throw new TreError(EXIT.verification, `${f.rel}: ${e.message}`);
    }
    throw e;
  }
  await verified(o, st);
  return true;
}

async function verified(o: UploadRun, st: FileState): Promise<void> {
  st.phase = o.keys.register ? 'verified' : 'registered';
  await o.session.saveFile(st);
  o.progress.fileDone(st.uploadId);
}

/** The server discarded its copy; a new upload starts from scratch on the next run. */
async function restartAfterMismatch(o: UploadRun, st: FileState): Promise<void> {
  await o.session.saveFile({
    ...st,
    phase: 'uploading',
    units: [],
    uploadId: randomBytes(16).toString('hex'),
  });
}
