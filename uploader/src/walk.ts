/**
 * Collects the regular files under the given paths. Symbolic links and special files
 * (devices, FIFOs, sockets) are refused, all of them reported at once before anything is
 * uploaded, so a run never transfers half a tree and then stops.
 */
import { lstat, readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { validatePlainName } from '@tre/crypto';

export interface SourceFile {
  abs: string;
  /** Path below the destination, '/'-separated plaintext names. */
  rel: string;
  size: number;
  mtimeMs: number;
  ino: number;
}

export interface WalkResult {
  files: SourceFile[];
  /** Directories (relative, '/'-separated), parents before children, including empty ones. */
  dirs: string[];
  refused: string[];
}

function kind(st: import('node:fs').Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

export async function walk(paths: string[]): Promise<WalkResult> {
  const out: WalkResult = { files: [], dirs: [], refused: [] };
  const seen = new Set<string>();
  const stack: Array<{ abs: string; rel: string }> = [];
  for (const p of [...paths].reverse()) {
    const abs = resolve(p);
    stack.push({ abs, rel: basename(abs) });
  }
  while (stack.length > 0) {
    const { abs, rel } = stack.pop()!;
    const name = basename(rel);
    try {
      validatePlainName(name);
    } catch (e) {
      out.refused.push(`${abs}: name not allowed (${(e as Error).message})`);
      continue;
    }
    const st = await lstat(abs);
    if (st.isDirectory()) {
      out.dirs.push(rel);
      const entries = (await readdir(abs)).sort().reverse();
      for (const e of entries) stack.push({ abs: join(abs, e), rel: `${rel}/${e}` });
    } else if (st.isFile()) {
      if (seen.has(rel)) {
        out.refused.push(`${abs}: a second source maps to the same destination ${rel}`);
        continue;
      }
      seen.add(rel);
      out.files.push({ abs, rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino });
    } else {
      out.refused.push(
        `${abs}: refusing ${kind(st)}; only regular files and directories are uploaded`,
      );
    }
  }
  return out;
}
