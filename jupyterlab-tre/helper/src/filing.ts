/**
 * Filing an egress request from the export folder: check every file, freeze it (source), wrap
 * its DEK to the requester and every reviewer's current KEK, hand the manifest to the KMS.
 * The plaintext and the DEKs stay here; the KMS receives ciphertext hashes, wraps and records.
 */
import { decodePublicKey, type PublicKey } from '@tre/crypto';
import type { EgressFiling, EgressView, KmsClient } from '@tre/kms-service/client';
import { EGRESS_REVIEWER_ROLES } from '@tre/kms-service/policy';
import { checkExport } from './export-folder.js';
import type { FileSource } from './file-source.js';
import { KeyAgentError, type KeyAgentClient } from './key-agent.js';

export class FilingError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** The HTTP status the server extension answers with (400 when not set). */
    readonly status?: number,
  ) {
    super(message);
    this.name = 'FilingError';
  }
}

export interface FilingInput {
  kms: KmsClient;
  source: FileSource;
  projectId: string;
  exportDir: string;
  /** Put before each path (`export/` in a session: paths name the file in the project tree). */
  pathPrefix?: string;
  /** Add to this draft or returned request; otherwise a new one is created with `title`. */
  requestId?: number;
  title?: string;
}

/** Requester and reviewers: the people whose current KEK each DEK is wrapped to. */
export async function recipients(
  kms: KmsClient,
  projectId: string,
  requester: string,
): Promise<Array<[string, PublicKey]>> {
  const project = await kms.project(projectId);
  const names = new Set<string>([requester]);
  for (const m of project.members) {
    if (EGRESS_REVIEWER_ROLES.includes(m.role) && m.username !== requester) {
      names.add(m.username);
    }
  }
  const out: Array<[string, PublicKey]> = [];
  for (const name of names) {
    const current = (await kms.listKeks(name)).find((k) => k.current);
    if (!current) {
      throw new FilingError('no_key', `${name} has no key yet: they must set one up first`);
    }
    out.push([name, decodePublicKey(current.publicKey)]);
  }
  return out;
}

/** States in which the requester may (re)file and in which filed files are not frozen. */
export const REFILE_STATES = ['draft', 'returned'];
export const UNFROZEN_STATES = ['draft', 'returned', 'withdrawn', 'rejected', 'revoked'];

export async function fileExport(input: FilingInput): Promise<EgressView> {
  const { kms, projectId } = input;
  const me = await kms.me();
  const checked = await checkExport(input.exportDir, input.pathPrefix);
  if (checked.length === 0) {
    throw new FilingError(
      'empty_export',
      'the export folder is empty: put the outputs there first',
    );
  }
  // Wrapping here needs every recipient's key: refuse before a request exists.
  const who = input.source.wrapsHere ? await recipients(kms, projectId, me.username) : [];
  let id = input.requestId;
  if (id === undefined) {
    id = (await kms.createEgress(projectId, input.title ?? 'Outputs')).id;
  } else {
    // Refiling replaces the request's freeze: say plainly why a request under review cannot be.
    const current = await kms.egress(projectId, id);
    if (!REFILE_STATES.includes(current.state)) {
      throw new FilingError(
        'wrong_state',
        `request ${id} is ${current.state}: only a draft or returned request takes new files`,
      );
    }
  }
  const prepared = await input.source.prepare(projectId, id, checked, who);
  const filings: EgressFiling[] = prepared.map((p, i) => ({
    fileId: p.fileId,
    path: p.path,
    size: p.size,
    sha256: p.sha256,
    sdc: (checked[i] as (typeof checked)[number]).sdc,
    keys: p.keys,
  }));
  try {
    return await kms.putEgressFiles(projectId, id, filings);
  } catch (e) {
    // Nothing was filed: the files are the requester's to change again.
    await input.source.abandon(id).catch(() => false);
    throw e;
  }
}

/**
 * Lifts the freeze of a request that no longer holds its files. The KMS says which state the
 * request is in (trefs checks again), so the page cannot unfreeze a request under review.
 */
export async function liftFreeze(
  kms: KmsClient,
  source: FileSource,
  projectId: string,
  requestId: number,
): Promise<{ requestId: number; state: string; lifted: boolean }> {
  const view = await kms.egress(projectId, requestId);
  if (!UNFROZEN_STATES.includes(view.state)) {
    return { requestId, state: view.state, lifted: false };
  }
  return { requestId, state: view.state, lifted: await source.abandon(requestId) };
}

/**
 * Before a submit: the request's files frozen again (a filed draft's freeze can be lifted, and
 * its files edited) and their ciphertext compared with what was filed. Reviewers must see what
 * the requester filed, so a changed or missing file refuses the submit (409) with the paths to
 * refile; the freeze made for the check is lifted again then. When every file is unchanged the
 * files stay frozen, so nothing can change between this check and the submit.
 */
export async function verifyFiled(
  kms: KmsClient,
  agent: KeyAgentClient,
  projectId: string,
  requestId: number,
): Promise<{ requestId: number; state: string; verified: number }> {
  const view = await kms.egress(projectId, requestId);
  // Any other state, or nothing filed: the KMS refuses the submit with its own reason.
  if (!REFILE_STATES.includes(view.state) || view.files.length === 0) {
    return { requestId, state: view.state, verified: 0 };
  }
  const paths = view.files.map((f) => f.path);
  let changed: string[];
  try {
    const now = new Map((await agent.freeze(paths, requestId)).map((f) => [f.path, f]));
    changed = view.files
      .filter((f) => {
        const n = now.get(f.path);
        return !n || n.fileId !== f.fileId || n.size !== f.size || n.sha256 !== f.sha256;
      })
      .map((f) => f.path);
  } catch (e) {
    // A filed file deleted, renamed or replaced since: the freeze cannot take it as it was.
    const gone =
      e instanceof KeyAgentError &&
      (e.status === 404 || e.code === 'changed' || e.code === 'not_a_file');
    if (!gone) throw e;
    changed = paths;
  }
  if (changed.length > 0) {
    await agent.lift(requestId).catch(() => false);
    throw new FilingError(
      'changed_since_filing',
      `request ${requestId}: ${changed.join(', ')} changed since it was filed; file the export ` +
        'folder again (refile) before submitting',
      409,
    );
  }
  return { requestId, state: view.state, verified: paths.length };
}
