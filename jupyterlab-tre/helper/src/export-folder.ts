/**
 * The export folder as the lab sees it: `/data/<project>/export`, plaintext (trefs decrypts it,
 * or it is a plain directory in demo mode). Only regular files count; symbolic links are refused
 * because a link could point a filing at data outside the folder.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { checkFile, MAX_TABLE_CHARS, type FileCheck } from '@tre/kms-service/sdc';

export interface ExportEntry {
  /** Path relative to the export folder, with `/` separators. */
  path: string;
  abs: string;
  size: number;
}

export class ExportFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportFolderError';
  }
}

/** Most files a single request may hold: reviewers have to look at every one. */
export const MAX_EXPORT_FILES = 200;

/**
 * The files of the folder; `prefix` goes before each relative path (`export/` when paths must
 * name the file in the project tree, as `tre download` resolves them).
 */
export async function listExport(root: string, prefix = ''): Promise<ExportEntry[]> {
  const out: ExportEntry[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const abs = join(dir, name);
      const r = rel === '' ? name : posix.join(rel, name);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        throw new ExportFolderError(`${r} is a symbolic link: copy the file itself into export/`);
      }
      if (st.isDirectory()) await walk(abs, r);
      else if (st.isFile()) out.push({ path: prefix + r, abs, size: st.size });
      if (out.length > MAX_EXPORT_FILES) {
        throw new ExportFolderError(`more than ${MAX_EXPORT_FILES} files in the export folder`);
      }
    }
  };
  try {
    await walk(root, '');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && out.length === 0) return [];
    throw e;
  }
  return out;
}

export interface CheckedEntry extends ExportEntry {
  sdc: FileCheck;
}

/** Runs the disclosure checks on every file of the folder (tables get a verdict per cell). */
export async function checkExport(root: string, prefix = ''): Promise<CheckedEntry[]> {
  const entries = await listExport(root, prefix);
  const out: CheckedEntry[] = [];
  for (const e of entries) {
    out.push({ ...e, sdc: await checkEntry(e) });
  }
  return out;
}

const TABLE = /\.(csv|tsv|tab)$/i;

export async function checkEntry(e: ExportEntry): Promise<FileCheck> {
  // Only tables are read: any other file is `review` whatever it holds.
  if (!TABLE.test(e.path)) return checkFile(e.path, '');
  if (e.size > MAX_TABLE_CHARS * 4) {
    return checkFile(e.path, 'x'.repeat(MAX_TABLE_CHARS + 1));
  }
  return checkFile(e.path, await readFile(e.abs, 'utf8'));
}
