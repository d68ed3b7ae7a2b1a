/**
 * A reviewer opening a filed file inside their own session of the project. trefs's key agent
 * asks the KMS for the file's egress DEK wrapped to the reviewer (the KMS answers only reviewers
 * of a request under review, and audits it) and opens it with the reviewer's KEK, which never
 * enters the container. The file shown is the one in the project tree, read through the mount,
 * and only if it is the filed one: the agent's manifest of its ciphertext (file ID, size,
 * SHA-256) must match the filing, and the egress DEK must be the DEK trefs holds for it.
 */
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyAgentClient } from './key-agent.js';

export class ReviewError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ReviewError';
  }
}

/** Text shown in the lab at most; larger files are verified but not sent to the page. */
export const MAX_SHOWN = 1024 * 1024;

export interface OpenedFile {
  path: string;
  size: number;
  verified: true;
  text?: string;
}

export async function openFiled(o: {
  agent: KeyAgentClient;
  projectId: string;
  mountDir: string;
  requestId: number;
  fileId: string;
}): Promise<OpenedFile> {
  const filed = await o.agent.reviewKey(o.projectId, o.requestId, o.fileId.toLowerCase());
  const egressDek = filed.key;
  let fileDek: Buffer | undefined;
  try {
    if (filed.path.split('/').some((p) => p === '' || p === '.' || p === '..')) {
      throw new ReviewError(409, 'bad_path', `the filed path ${filed.path} is not a project path`);
    }
    const [live] = await o.agent.manifest([filed.path]);
    if (
      !live ||
      live.fileId !== filed.fileId ||
      live.size !== filed.size ||
      live.sha256 !== filed.sha256
    ) {
      throw new ReviewError(
        409,
        'changed',
        `${filed.path} in the project tree is not the filed file (it changed or was replaced)`,
      );
    }
    fileDek = await o.agent.dek(filed.path);
    if (!timingSafeEqual(egressDek, fileDek)) {
      throw new ReviewError(409, 'key_mismatch', `${filed.path}: the filed key is not the file's`);
    }
  } finally {
    egressDek.fill(0);
    fileDek?.fill(0);
  }
  // `size` is the ciphertext's, as in the manifest; the plaintext is a little smaller.
  if (filed.size > MAX_SHOWN * 2) return { path: filed.path, size: filed.size, verified: true };
  const text = await readFile(join(o.mountDir, filed.path), 'utf8');
  return {
    path: filed.path,
    size: filed.size,
    verified: true,
    ...(text.length <= MAX_SHOWN ? { text } : {}),
  };
}
