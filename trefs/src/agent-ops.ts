/**
 * The key agent's operations beyond a file's DEK: the egress manifest, the freeze of filed
 * files, the completion of pending grants and the opening of a reviewer's egress DEK. Bodies
 * arrive validated (agent-api.ts); this decides and acts. The KEK and the project private keys
 * stay in the key ring; DEKs leave only wrapped, except the one review DEK a reviewer asks for.
 */
import { wrapKey, type WrappedKey } from '@tre/crypto';
import type { EgressKms } from './egress-kms.js';
import { AgentError, FsError } from './errors.js';
import type { FileFacts, TrefsFs } from './filesystem.js';
import { REFRESH_MS, type FreezeStore, type FrozenFile } from './freeze.js';
import { egressContext } from '@tre/crypto';
import type { KeyRing } from './keyring.js';

/** States in which a request's files may be filed (frozen with a new manifest). */
const FILABLE = ['draft', 'returned'];
/** States after which the files may change again: not (or no longer) under review or release. */
const LIFTABLE = ['draft', 'returned', 'withdrawn', 'rejected', 'revoked'];
const FINAL = ['withdrawn', 'rejected', 'revoked'];

export interface ManifestEntry {
  path: string;
  fileId: string;
  size: number;
  sha256: string;
}

export interface FiledEntry extends ManifestEntry {
  /** The DEK wrapped to the requester and every reviewer (with the KMS; empty without). */
  keys: Array<{ username: string; wrapped: WrappedKey }>;
}

export interface AgentOpsOptions {
  fs: TrefsFs;
  keys: KeyRing;
  freeze: FreezeStore;
  projectId: string;
  /** A read-only mount writes nothing into the cipher tree: no freezes. */
  readOnly: boolean;
  /** Absent with a local key service: freezes then go unchecked, grants and reviews fail. */
  kms?: EgressKms;
  log: (msg: string, fields: Record<string, unknown>) => void;
  now?: () => Date;
}

/** A manifest entry under the path as the caller gave it (with or without a leading slash). */
function entry(f: FileFacts, asked: string): ManifestEntry {
  return { path: asked, fileId: f.fileId, size: f.size, sha256: f.sha256 };
}

/** The mount path of a path relative to the mount's root (a leading slash is allowed). */
const inMount = (p: string): string => `/${p.replace(/^\//, '')}`;

/** Filesystem failures as the agent answers them. */
function fsFailure(err: unknown, path: string): Error {
  if (err instanceof AgentError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new AgentError(404, 'no_such_file', `${path}: no such file`);
  }
  if (err instanceof FsError) {
    if (err.errno === 13) return new AgentError(403, 'access_ended', 'access has ended');
    return new AgentError(409, 'not_a_file', `${path}: ${err.message}`);
  }
  return err as Error;
}

export class AgentOps {
  constructor(private readonly o: AgentOpsOptions) {}

  private needKms(what: string): EgressKms {
    if (!this.o.kms) {
      throw new AgentError(501, 'needs_kms', `${what} needs the KMS (mount with --kms https://…)`);
    }
    return this.o.kms;
  }

  private sameProject(project: string): void {
    if (project !== this.o.projectId) {
      throw new AgentError(
        403,
        'other_project',
        `this session holds the keys of project ${this.o.projectId}, not ${project}`,
      );
    }
  }

  async manifest(paths: string[]): Promise<{ files: ManifestEntry[] }> {
    const files: ManifestEntry[] = [];
    for (const p of paths) {
      try {
        files.push(entry(await this.o.fs.facts(inMount(p)), p));
      } catch (err) {
        throw fsFailure(err, p);
      }
    }
    return { files };
  }

  /**
   * Freezes the files, then records their manifest: the freeze is enforced in this mount before
   * anything is read, changes already under way finish first, and the record reaches the cipher
   * tree before the hashes are taken, so the manifest describes the bytes that stay.
   */
  private writable(): void {
    if (this.o.readOnly) {
      throw new AgentError(409, 'read_only', 'this mount is read-only: it records no freeze');
    }
  }

  async freeze(
    paths: string[],
    requestId: number,
  ): Promise<{ requestId: number; files: FiledEntry[] }> {
    this.writable();
    const { fs, freeze, kms } = this.o;
    let recipients: string[] = [];
    if (kms) {
      const [me, req] = await Promise.all([kms.me(), kms.request(this.o.projectId, requestId)]);
      if (req.requester !== me) {
        throw new AgentError(
          403,
          'not_requester',
          `egress request ${requestId} is ${req.requester}'s`,
        );
      }
      if (!FILABLE.includes(req.state)) {
        throw new AgentError(
          409,
          'wrong_state',
          `egress request ${requestId} is ${req.state}: files are filed while it is a draft or returned`,
        );
      }
      recipients = req.recipients;
    }
    const frozen: FrozenFile[] = [];
    for (const p of paths) {
      try {
        frozen.push(await fs.frozenFileOf(inMount(p)));
      } catch (err) {
        throw fsFailure(err, p);
      }
    }
    if (new Set(frozen.map((f) => f.fileId)).size !== frozen.length) {
      throw new AgentError(400, 'duplicate_file', 'a file appears twice');
    }
    const pks = kms ? await Promise.all(recipients.map((u) => kms.currentKek(u))) : [];

    freeze.refresh(true);
    const previous = freeze.record(requestId);
    freeze.begin(requestId, frozen, (this.o.now ?? (() => new Date()))());
    let files: FiledEntry[];
    let committed = false;
    try {
      await fs.settle(new Set(frozen.map((f) => f.fileId)));
      await freeze.commit(requestId);
      committed = true;
      // Other mounts of the tree see the record at their next look (at most REFRESH_MS apart);
      // the hashes are taken once every such look has happened.
      await new Promise((r) => setTimeout(r, 2 * REFRESH_MS + 50));
      const facts = await Promise.all(paths.map((p) => fs.facts(inMount(p))));
      facts.forEach((f, i) => {
        if (f.fileId !== frozen[i]!.fileId || f.cipherPath !== frozen[i]!.cipherPath) {
          throw new AgentError(409, 'changed', `${paths[i]} was replaced while it was frozen`);
        }
      });
      files = [];
      for (const [n, f] of facts.entries()) {
        const keys: FiledEntry['keys'] = [];
        if (pks.length > 0) {
          const dek = (await this.o.keys.fileKey(Buffer.from(f.fileId, 'hex'))).dek;
          for (const [i, username] of recipients.entries()) {
            keys.push({
              username,
              wrapped: await wrapKey(
                dek,
                pks[i]!,
                egressContext(this.o.projectId, f.fileId, username),
              ),
            });
          }
        }
        files.push({ ...entry(f, paths[n]!), keys });
      }
    } catch (err) {
      // Nothing the caller was not told about stays frozen: the previous freeze (a returned
      // request's) holds again, or none.
      freeze.abort(requestId);
      if (committed && previous) {
        freeze.begin(requestId, previous.files, new Date(previous.frozenAt));
        await freeze.commit(requestId).catch(() => freeze.abort(requestId));
      } else if (committed) {
        await freeze.lift(requestId).catch(() => undefined);
      }
      throw fsFailure(err, 'a filed file');
    }
    this.o.log('egress files frozen', { requestId, files: files.length });
    return { requestId, files };
  }

  async lift(requestId: number): Promise<{ requestId: number; lifted: boolean }> {
    this.writable();
    const { kms } = this.o;
    if (kms) {
      const [me, req] = await Promise.all([kms.me(), kms.request(this.o.projectId, requestId)]);
      if (!LIFTABLE.includes(req.state)) {
        throw new AgentError(
          409,
          'wrong_state',
          `egress request ${requestId} is ${req.state}: its files stay frozen`,
        );
      }
      if (req.requester !== me && !FINAL.includes(req.state)) {
        throw new AgentError(
          403,
          'not_requester',
          `egress request ${requestId} is ${req.requester}'s`,
        );
      }
    }
    const lifted = await this.o.freeze.lift(requestId);
    this.o.log('egress freeze lifted', { requestId, lifted });
    return { requestId, lifted };
  }

  /**
   * Completes the project's pending grants: the project private key of each grant's epoch,
   * held in the key ring, wrapped to the newcomer's current KEK.
   */
  async grants(project: string) {
    this.sameProject(project);
    const kms = this.needKms('completing grants');
    const completed: Array<{ id: number; username: string; epoch: number }> = [];
    const skipped: Array<{ id: number; username: string; reason: string }> = [];
    for (const g of await kms.grants(project)) {
      if (g.kek === null) {
        skipped.push({ id: g.id, username: g.username, reason: 'they have no key yet' });
        continue;
      }
      if (!this.o.keys.epochs.includes(g.epoch)) {
        skipped.push({
          id: g.id,
          username: g.username,
          reason: `epoch ${g.epoch} of the project key is not held in this session`,
        });
        continue;
      }
      await kms.completeGrant(project, g.id, await this.o.keys.wrapProjectKey(g.epoch, g.kek));
      completed.push({ id: g.id, username: g.username, epoch: g.epoch });
    }
    this.o.log('grants completed', { completed: completed.length, skipped: skipped.length });
    return { completed, skipped };
  }

  /**
   * A reviewer's egress DEK of one filed file, opened with this session's KEK: the wrap is the
   * one the KMS gives the session's member for the request, or one the caller fetched itself
   * (`wrapped`). Either way the context names the member as recipient, so only a wrap made for
   * them opens.
   */
  async reviewKey(
    project: string,
    fileId: string,
    from: { requestId: number } | { wrapped: WrappedKey },
  ) {
    this.sameProject(project);
    const kms = this.needKms('a review key');
    const id = fileId.toLowerCase();
    const [me, rec] = await Promise.all([
      kms.me(),
      'requestId' in from ? kms.reviewKey(project, from.requestId, id) : undefined,
    ]);
    if (rec && rec.fileId !== id) {
      throw new AgentError(502, 'bad_answer', 'the KMS answered for another file');
    }
    const wrapped = rec ? rec.wrapped : (from as { wrapped: WrappedKey }).wrapped;
    let dek: Buffer;
    try {
      dek = await this.o.keys.unwrapForMember(wrapped, egressContext(project, id, me));
    } catch (err) {
      if (err instanceof FsError) throw fsFailure(err, fileId);
      throw new AgentError(403, 'not_yours', `the key of file ${id} is not wrapped to your key`);
    }
    try {
      this.o.log('review key opened', { fileId: id });
      return {
        fileId: id,
        ...(rec ? { path: rec.path, size: rec.size, sha256: rec.sha256 } : {}),
        key: dek.toString('base64'),
      };
    } finally {
      dek.fill(0);
    }
  }
}
