#!/usr/bin/env node
/**
 * `tre-lab-helper <command>`: the lab server extension's hands for what needs the TRE's
 * TypeScript (disclosure checks, crypto, the typed KMS client). The server extension runs it per
 * request with a JSON object on stdin (the user's hub token travels there, never in argv or the
 * environment) and reads one JSON object from stdout.
 *
 *   check   {exportDir}                                          -> {files: [{path, size, sdc}]}
 *   file    {kmsUrl, token, project, exportDir, outbox, requestId?, title?} -> the request view
 *
 * Exit codes: 0 success, 1 the operation failed ({"error": {code, message}} on stdout),
 * 2 bad usage or input.
 */
import { KmsClient, KmsClientError } from '@tre/kms-service/client';
import { checkExport, ExportFolderError } from './export-folder.js';
import { SnapshotSource } from './file-source.js';
import { fileExport, FilingError } from './filing.js';

const USAGE = `usage: tre-lab-helper <check|file> < request.json

  check   run the disclosure checks on every file of {"exportDir"}
  file    file {"exportDir"} as an egress request of {"project"} through {"kmsUrl"}
          with {"token"}, frozen into {"outbox"} (demo mode); {"requestId"} adds to a
          draft or returned request, otherwise {"title"} names a new one

exit codes: 0 success, 1 failure, 2 bad usage or input`;

class UsageError extends Error {}

async function readStdin(): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
  } catch {
    throw new UsageError('stdin must be one JSON object');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new UsageError('stdin must be one JSON object');
  }
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') throw new UsageError(`"${k}" must be a non-empty string`);
  return v;
}

async function run(cmd: string, input: Record<string, unknown>): Promise<unknown> {
  if (cmd === 'check') {
    const files = await checkExport(str(input, 'exportDir'));
    return { files: files.map(({ path, size, sdc }) => ({ path, size, sdc })) };
  }
  if (cmd === 'file') {
    const requestId = input.requestId;
    if (
      requestId !== undefined &&
      (typeof requestId !== 'number' || !Number.isInteger(requestId))
    ) {
      throw new UsageError('"requestId" must be an integer');
    }
    const kms = new KmsClient({ baseUrl: str(input, 'kmsUrl'), token: str(input, 'token') });
    return fileExport({
      kms,
      source: new SnapshotSource(str(input, 'outbox')),
      projectId: str(input, 'project'),
      exportDir: str(input, 'exportDir'),
      ...(requestId !== undefined ? { requestId } : {}),
      ...(typeof input.title === 'string' ? { title: input.title } : {}),
    });
  }
  throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
}

async function main(): Promise<number> {
  const cmd = process.argv[2];
  if (cmd === undefined || cmd === '--help' || cmd === '-h') {
    (cmd === undefined ? process.stderr : process.stdout).write(USAGE + '\n');
    return cmd === undefined ? 2 : 0;
  }
  try {
    const out = await run(cmd, await readStdin());
    process.stdout.write(JSON.stringify(out) + '\n');
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`tre-lab-helper: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    const error =
      e instanceof KmsClientError
        ? { code: e.code, message: e.message, status: e.status, reason: e.reason }
        : e instanceof FilingError
          ? { code: e.code, message: e.message }
          : e instanceof ExportFolderError
            ? { code: 'bad_export', message: e.message }
            : { code: 'internal', message: e instanceof Error ? e.message : String(e) };
    process.stdout.write(JSON.stringify({ error }) + '\n');
    return 1;
  }
}

process.exitCode = await main();
