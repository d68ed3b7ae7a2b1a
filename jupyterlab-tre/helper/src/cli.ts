#!/usr/bin/env node
/**
 * `tre-lab-helper <command>`: the lab server extension's hands for what needs the TRE's
 * TypeScript (disclosure checks, crypto, the typed KMS client). The server extension runs it per
 * request with a JSON object on stdin (the user's hub token travels there, never in argv or the
 * environment) and reads one JSON object from stdout.
 *
 *   check   {exportDir, pathPrefix?}                      -> {files: [{path, size, sdc}]}
 *   file    {kmsUrl, token, project, exportDir, outbox | keyAgent, requestId?, title?}
 *                                                         -> the request view
 *   lift    {kmsUrl, token, project, keyAgent, requestId} -> {requestId, state, lifted}
 *   verify  {kmsUrl, token, project, keyAgent, requestId} -> {requestId, state, verified}
 *   grants  {project, keyAgent}                           -> the key agent's answer
 *   review  {project, keyAgent, mountDir, requestId, fileId}
 *                                                         -> {path, size, verified, text?}
 *
 * Exit codes: 0 success, 1 the operation failed ({"error": {code, message}} on stdout),
 * 2 bad usage or input.
 */
import { KmsClient, KmsClientError } from '@tre/kms-service/client';
import { checkExport, ExportFolderError } from './export-folder.js';
import { AgentSource, SnapshotSource, type FileSource } from './file-source.js';
import { fileExport, FilingError, liftFreeze, verifyFiled } from './filing.js';
import { KeyAgentClient, KeyAgentError } from './key-agent.js';
import { openFiled, ReviewError } from './review.js';

const USAGE = `usage: tre-lab-helper <check|file|lift|verify|grants|review> < request.json

  check   run the disclosure checks on every file of {"exportDir"} (paths get
          {"pathPrefix"} before them)
  file    file {"exportDir"} as an egress request of {"project"} through {"kmsUrl"}
          with {"token"}: frozen by trefs's key agent at {"keyAgent"} (a session; paths
          are project-relative, export/...) or into {"outbox"} (demo mode);
          {"requestId"} adds to a draft or returned request, otherwise {"title"} names
          a new one
  lift    lift the freeze of {"requestId"} if the KMS says it no longer holds its files
  verify  before a submit: freeze the files of {"requestId"} again and refuse (409)
          if any differs from what was filed
  grants  complete the pending grants of {"project"} through {"keyAgent"}
  review  open file {"fileId"} of request {"requestId"} as a reviewer: the key agent
          opens its egress key, the file in {"mountDir"} must be the filed one

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

function int(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw new UsageError(`"${k}" must be a positive integer`);
  }
  return v;
}

const kmsOf = (input: Record<string, unknown>): KmsClient =>
  new KmsClient({ baseUrl: str(input, 'kmsUrl'), token: str(input, 'token') });
const agentOf = (input: Record<string, unknown>): KeyAgentClient =>
  new KeyAgentClient(str(input, 'keyAgent'));

async function run(cmd: string, input: Record<string, unknown>): Promise<unknown> {
  if (cmd === 'check') {
    const prefix = typeof input.pathPrefix === 'string' ? input.pathPrefix : '';
    const files = await checkExport(str(input, 'exportDir'), prefix);
    return { files: files.map(({ path, size, sdc }) => ({ path, size, sdc })) };
  }
  if (cmd === 'file') {
    const requestId = input.requestId === undefined ? undefined : int(input, 'requestId');
    const inSession = input.keyAgent !== undefined;
    if (inSession === (input.outbox !== undefined)) {
      throw new UsageError('exactly one of "keyAgent" (a session) and "outbox" (demo mode)');
    }
    const source: FileSource = inSession
      ? new AgentSource(agentOf(input))
      : new SnapshotSource(str(input, 'outbox'));
    return fileExport({
      kms: kmsOf(input),
      source,
      projectId: str(input, 'project'),
      exportDir: str(input, 'exportDir'),
      ...(inSession ? { pathPrefix: 'export/' } : {}),
      ...(requestId !== undefined ? { requestId } : {}),
      ...(typeof input.title === 'string' ? { title: input.title } : {}),
    });
  }
  if (cmd === 'lift') {
    return liftFreeze(
      kmsOf(input),
      new AgentSource(agentOf(input)),
      str(input, 'project'),
      int(input, 'requestId'),
    );
  }
  if (cmd === 'verify') {
    return verifyFiled(
      kmsOf(input),
      agentOf(input),
      str(input, 'project'),
      int(input, 'requestId'),
    );
  }
  if (cmd === 'grants') {
    return agentOf(input).grants(str(input, 'project'));
  }
  if (cmd === 'review') {
    return openFiled({
      agent: agentOf(input),
      projectId: str(input, 'project'),
      mountDir: str(input, 'mountDir'),
      requestId: int(input, 'requestId'),
      fileId: str(input, 'fileId'),
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
        : e instanceof FilingError || e instanceof ReviewError
          ? {
              code: e.code,
              message: e.message,
              ...(e.status !== undefined ? { status: e.status } : {}),
            }
          : e instanceof KeyAgentError
            ? { code: e.code, message: e.message, status: e.status }
            : e instanceof ExportFolderError
              ? { code: 'bad_export', message: e.message }
              : { code: 'internal', message: e instanceof Error ? e.message : String(e) };
    process.stdout.write(JSON.stringify({ error }) + '\n');
    return 1;
  }
}

process.exitCode = await main();
