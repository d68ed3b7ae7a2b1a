import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { link, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

/** Names of temporary entries: short (a 255-byte final name leaves no room) and recognisable. */
export const TEMP_NAME = /^\.tre-[0-9a-f]{12}\.tmp$/;

/** A hidden, unique sibling of `path` to build it under before it becomes visible. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.tre-${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * Creates a small file atomically and exclusively: written and synced under a temporary name,
 * then hard-linked to its final name (link, unlike rename, fails if that name exists), so
 * readers never see a partial file and an existing one is never replaced.
 */
export async function writeNewFileAtomic(
  path: string,
  data: Uint8Array | string,
  mode: number,
): Promise<void> {
  const tmp = tempSibling(path);
  const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}
