/**
 * Filing an egress request from the export folder: check every file, freeze it (source), wrap
 * its DEK to the requester and every reviewer's current KEK, hand the manifest to the KMS.
 * The plaintext and the DEKs stay here; the KMS receives ciphertext hashes, wraps and records.
 */
import { decodePublicKey, wrapKey, type PublicKey } from '@tre/crypto';
import type { EgressFiling, EgressView, KmsClient } from '@tre/kms-service/client';
import { EGRESS_REVIEWER_ROLES } from '@tre/kms-service/policy';
import { checkExport } from './export-folder.js';
import type { FileSource } from './file-source.js';

export class FilingError extends Error {
  constructor(
    readonly code: string,
    message: string,
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

export async function fileExport(input: FilingInput): Promise<EgressView> {
  const { kms, projectId } = input;
  const me = await kms.me();
  const checked = await checkExport(input.exportDir);
  if (checked.length === 0) {
    throw new FilingError(
      'empty_export',
      'the export folder is empty: put the outputs there first',
    );
  }
  const who = await recipients(kms, projectId, me.username);
  let id = input.requestId;
  if (id === undefined) {
    id = (await kms.createEgress(projectId, input.title ?? 'Outputs')).id;
  }
  const filings: EgressFiling[] = [];
  for (const e of checked) {
    const prepared = await input.source.prepare(projectId, e.path, e.abs);
    try {
      const keys = [];
      for (const [username, pk] of who) {
        keys.push({
          username,
          wrapped: await wrapKey(prepared.dek, pk, {
            purpose: 'egress',
            projectId,
            fileId: prepared.fileId,
            recipient: username,
          }),
        });
      }
      filings.push({
        fileId: prepared.fileId,
        path: e.path,
        size: prepared.size,
        sha256: prepared.sha256,
        sdc: e.sdc,
        keys,
      });
    } finally {
      prepared.dek.fill(0);
    }
  }
  return kms.putEgressFiles(projectId, id, filings);
}
