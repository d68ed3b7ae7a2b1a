#!/usr/bin/env node
/**
 * The `tre` command. Exit codes (see README): 0 done, 1 failed, 2 usage, 3 not authorised,
 * 4 input refused, 5 service unavailable or connection lost (run again to resume),
 * 6 verification failed, 7 wrong passphrase or key, 8 egress request not (or no longer)
 * released, 130 interrupted.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { validatePlainName } from '@tre/crypto';
import { EXIT, TreError } from './errors.js';
import { IngressClient } from './ingress-client.js';
import type { ChecklistInput } from './ingress-client.js';
import { createKeyFile, defaultKeyFile, openKeyFile, readKeyFile } from './keys.js';
import { createProgress } from './progress.js';
import { SessionStore, defaultStateRoot, sessionId } from './resume-state.js';
import { parseHexKey, passphrase, readFd } from './secrets.js';
import { runUpload } from './upload.js';
import { kmsFailure, kmsMode, masterKeyMode } from './upload-keys.js';
import type { UploadKeys } from './upload-keys.js';

const here = dirname(fileURLToPath(import.meta.url));
export const version = (
  JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8')) as { version: string }
).version;

function intArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new TreError(EXIT.usage, `${name} must be a whole number`);
    return n;
  };
}

async function hubToken(file: string | undefined): Promise<string> {
  const t = file
    ? (await readFile(file, 'utf8')).trim()
    : (process.env.JUPYTERHUB_API_TOKEN ?? process.env.TRE_TOKEN ?? '').trim();
  if (!t) {
    throw new TreError(EXIT.usage, 'no hub token: use --token-file or set JUPYTERHUB_API_TOKEN');
  }
  return t;
}

/** Loaded on demand: the KMS client is the heaviest part of the CLI's startup. */
async function kmsClient(url: string, token: string) {
  const { KmsClient } = await import('@tre/kms-service/client');
  return new KmsClient({ baseUrl: url, token });
}

function checklistFrom(o: Record<string, unknown>): ChecklistInput | undefined {
  if (o.legalBasis === undefined) return undefined;
  return {
    pseudonymised: o.pseudonymised === true,
    noDirectIdentifiers: o.noDirectIdentifiers === true,
    legalBasis: String(o.legalBasis),
    dataMinimisation: o.minimised === true,
    ...(o.note !== undefined ? { note: String(o.note) } : {}),
  };
}

export function buildProgram(): Command {
  const program = new Command('tre')
    .description('Client-side encrypted upload into the Trusted Research Environment')
    .version(version)
    .exitOverride()
    .showHelpAfterError();

  program
    .command('upload')
    .description('encrypt files and folders locally and upload them into a project (resumable)')
    .argument('<paths...>', 'files and folders to upload')
    .requiredOption('--project <id>', 'project to upload into')
    .requiredOption('--ingress <url>', 'ingress service URL')
    .option('--kms <url>', 'KMS URL (required unless --master-key-fd)')
    .option('--key-file <path>', 'your KEK key file', defaultKeyFile())
    .option(
      '--passphrase-fd <n>',
      'read the key file passphrase from this descriptor',
      intArg('--passphrase-fd'),
    )
    .option(
      '--master-key-fd <n>',
      'master-key mode: one volume key (64 hex) from this descriptor for names and every file, no KMS',
      intArg('--master-key-fd'),
    )
    .option(
      '--token-file <path>',
      'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
    )
    .option('--dest <path>', 'destination folder inside the project', '')
    .option('--jobs <n>', 'files uploaded at the same time', intArg('--jobs'), 4)
    .option('--threads <n>', 'encryption threads (default: all cores)', intArg('--threads'))
    .option('--chunk-mib <n>', 'MiB of plaintext per request', intArg('--chunk-mib'), 8)
    .option('--state-dir <path>', 'where resume state lives', defaultStateRoot())
    .option(
      '--legal-basis <text>',
      'checklist: the legal basis; with the three attestations below, submits the request',
    )
    .option('--pseudonymised', 'checklist: the data are pseudonymised')
    .option('--no-direct-identifiers', 'checklist: the data hold no direct identifiers')
    .option('--minimised', 'checklist: only the data needed for the project (data minimisation)')
    .option('--note <text>', 'checklist: free text for the reviewer')
    .addOption(new Option('--progress', 'force progress bars').default(undefined))
    .action(async (paths: string[], o: Record<string, unknown>) => {
      // commander turns --no-direct-identifiers into directIdentifiers=false; default true.
      o.noDirectIdentifiers = o.directIdentifiers === false;
      const project = String(o.project);
      const dest = String(o.dest)
        .split('/')
        .filter((s) => s !== '');
      for (const d of dest) validatePlainName(d);
      const token = await hubToken(o.tokenFile as string | undefined);
      const ingress = new IngressClient(String(o.ingress), token);
      const sid = sessionId({
        project,
        ingress: ingress.base,
        dest,
        paths: paths.map((p) => resolve(p)),
      });
      const session = new SessionStore(String(o.stateDir), sid);
      await session.init();
      const state = (await session.loadSession()) ?? {
        v: 1 as const,
        id: sid,
        project,
        ingress: ingress.base,
        createdAt: new Date().toISOString(),
      };
      let keys: UploadKeys;
      if (o.masterKeyFd !== undefined) {
        keys = masterKeyMode(parseHexKey(readFd(o.masterKeyFd as number)));
      } else {
        if (!o.kms) throw new TreError(EXIT.usage, '--kms is required (or --master-key-fd)');
        const kek = await openKeyFile(
          String(o.keyFile),
          await passphrase(o.passphraseFd as number | undefined, 'Key file passphrase: '),
        );
        const got = await kmsMode({
          kmsUrl: String(o.kms),
          token,
          project,
          kek,
          sessionId: sid,
          ...(state.sessionKey ? { sessionKey: state.sessionKey } : {}),
        });
        kek.privateKey.fill(0);
        keys = got.keys;
        state.sessionKey = got.sessionKey;
      }
      await session.saveSession(state);
      const abort = new AbortController();
      const onSigint = (): void => abort.abort();
      process.once('SIGINT', onSigint);
      process.once('SIGTERM', onSigint);
      const checklist = checklistFrom(o);
      try {
        const sum = await runUpload({
          paths,
          project,
          dest,
          ingress,
          keys,
          session,
          state,
          jobs: Math.max(1, o.jobs as number),
          ...(o.threads !== undefined ? { threads: o.threads as number } : {}),
          chunkUnits: Math.max(1, o.chunkMib as number),
          ...(checklist ? { checklist } : {}),
          progress: createProgress(o.progress === true ? true : undefined),
          signal: abort.signal,
          log: (m) => process.stderr.write(`tre: ${m}\n`),
        });
        process.stdout.write(
          `${sum.files} files in ingress request ${sum.requestId} (${sum.skipped} already done); ` +
            (sum.submitted
              ? 'submitted for review\n'
              : `not submitted yet: tre ingress submit ${sum.requestId} --legal-basis ... --pseudonymised --no-direct-identifiers --minimised\n`),
        );
      } finally {
        process.off('SIGINT', onSigint);
        process.off('SIGTERM', onSigint);
        keys.close();
        await session.close();
      }
    });

  program
    .command('download')
    .description(
      'download the files of your released egress request: verify each against the manifest, decrypt locally',
    )
    .argument('<request>', 'egress request number', intArg('<request>'))
    .requiredOption('--project <id>', 'project of the request')
    .requiredOption('--kms <url>', 'KMS URL')
    .requiredOption('--ingress <url>', 'ingress service URL (serves the released ciphertext)')
    .option('--out <dir>', 'folder to write the files below', '.')
    .option('--force', 'replace files that exist already')
    .option('--jobs <n>', 'files fetched at the same time', intArg('--jobs'), 2)
    .option('--key-file <path>', 'your KEK key file', defaultKeyFile())
    .option(
      '--passphrase-fd <n>',
      'read the key file passphrase from this descriptor',
      intArg('--passphrase-fd'),
    )
    .option(
      '--token-file <path>',
      'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
    )
    .addOption(new Option('--progress', 'force progress bars').default(undefined))
    .action(async (requestId: number, o: Record<string, unknown>) => {
      if (requestId < 1) throw new TreError(EXIT.usage, '<request> must be a request number');
      const token = await hubToken(o.tokenFile as string | undefined);
      const kek = await openKeyFile(
        String(o.keyFile),
        await passphrase(o.passphraseFd as number | undefined, 'Key file passphrase: '),
      );
      const abort = new AbortController();
      const onSigint = (): void => abort.abort();
      process.once('SIGINT', onSigint);
      process.once('SIGTERM', onSigint);
      try {
        const { runDownload } = await import('./download.js');
        const sum = await runDownload({
          project: String(o.project),
          requestId,
          out: String(o.out),
          force: o.force === true,
          jobs: Math.max(1, o.jobs as number),
          kms: await kmsClient(String(o.kms), token),
          ingress: new IngressClient(String(o.ingress), token),
          kek,
          progress: createProgress(o.progress === true ? true : undefined),
          signal: abort.signal,
        });
        process.stdout.write(
          `${sum.files} files of egress request ${requestId} verified and decrypted into ${String(o.out)}\n`,
        );
      } finally {
        process.off('SIGINT', onSigint);
        process.off('SIGTERM', onSigint);
        kek.privateKey.fill(0);
      }
    });

  program
    .command('keygen')
    .description(
      'create your KEK key file (passphrase from a descriptor or the terminal) and register its public key',
    )
    .option('--key-file <path>', 'where to write it', defaultKeyFile())
    .option(
      '--passphrase-fd <n>',
      'read the new passphrase from this descriptor',
      intArg('--passphrase-fd'),
    )
    .addOption(
      new Option('--kem <kem>', 'key type').choices(['x25519', 'x-wing']).default('x25519'),
    )
    .option('--kms <url>', 'register the public key with this KMS')
    .option(
      '--token-file <path>',
      'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
    )
    .action(async (o: Record<string, unknown>) => {
      let pass: Buffer;
      if (o.passphraseFd !== undefined) {
        pass = await passphrase(o.passphraseFd as number, '');
      } else {
        pass = await passphrase(undefined, 'New passphrase: ');
        const again = await passphrase(undefined, 'Repeat it: ');
        const same = pass.equals(again);
        again.fill(0);
        if (!same) throw new TreError(EXIT.usage, 'the passphrases differ');
      }
      const file = await createKeyFile(String(o.keyFile), pass, o.kem as 'x25519' | 'x-wing');
      process.stdout.write(`created ${o.keyFile}\nkey id ${file.kid}\n`);
      if (o.kms) {
        const kms = await kmsClient(
          String(o.kms),
          await hubToken(o.tokenFile as string | undefined),
        );
        try {
          await kms.addKek(file.publicKey);
        } catch (e) {
          throw kmsFailure(
            e,
            'the key file was created but registering its public key failed (run "tre key register")',
          );
        }
        process.stdout.write('public key registered with the KMS\n');
      }
    });

  const key = program.command('key').description('your KEK');
  key
    .command('status')
    .description('show the key file and whether the KMS knows it as your current key')
    .option('--key-file <path>', 'key file', defaultKeyFile())
    .option('--kms <url>', 'compare with this KMS')
    .option(
      '--token-file <path>',
      'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
    )
    .action(async (o: Record<string, unknown>) => {
      const file = await readKeyFile(String(o.keyFile));
      process.stdout.write(
        `key file ${o.keyFile}\nkey id   ${file.kid}\nkem      ${file.kem}\ncreated  ${file.created ?? 'unknown'}\n`,
      );
      if (o.kms) {
        const kms = await kmsClient(
          String(o.kms),
          await hubToken(o.tokenFile as string | undefined),
        );
        let me;
        try {
          me = await kms.me();
        } catch (e) {
          throw kmsFailure(e, 'cannot ask the KMS');
        }
        const current = me.kek?.kid === file.kid;
        process.stdout.write(
          `kms      ${current ? 'registered as your current key' : me.kek ? `NOT current (current is ${me.kek.kid})` : 'no key registered'}\n`,
        );
        if (!current)
          throw new TreError(EXIT.wrongKey, 'the key file is not your current key in the KMS');
      }
    });
  key
    .command('register')
    .description('register the key file public key with the KMS')
    .option('--key-file <path>', 'key file', defaultKeyFile())
    .requiredOption('--kms <url>', 'KMS URL')
    .option(
      '--token-file <path>',
      'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
    )
    .action(async (o: Record<string, unknown>) => {
      const file = await readKeyFile(String(o.keyFile));
      const kms = await kmsClient(String(o.kms), await hubToken(o.tokenFile as string | undefined));
      try {
        await kms.addKek(file.publicKey);
      } catch (e) {
        throw kmsFailure(e, 'registering the public key failed');
      }
      process.stdout.write(`registered ${file.kid}\n`);
    });

  const ing = program.command('ingress').description('ingress requests and the ingress service');
  const withIngress = (c: Command) =>
    c
      .requiredOption('--ingress <url>', 'ingress service URL')
      .option(
        '--token-file <path>',
        'file holding your hub API token (default: $JUPYTERHUB_API_TOKEN)',
      );
  const client = async (o: Record<string, unknown>) =>
    new IngressClient(String(o.ingress), await hubToken(o.tokenFile as string | undefined));
  const print = (v: unknown): void => {
    process.stdout.write(JSON.stringify(v, null, 2) + '\n');
  };

  withIngress(
    ing
      .command('list')
      .description("list a project's ingress requests")
      .requiredOption('--project <id>', 'project'),
  ).action(async (o: Record<string, unknown>) =>
    print(await (await client(o)).listRequests(String(o.project))),
  );
  withIngress(
    ing.command('show').description('show one ingress request').argument('<request>', 'request id'),
  ).action(async (id: string, o: Record<string, unknown>) =>
    print(await (await client(o)).request(id)),
  );
  withIngress(
    ing
      .command('submit')
      .description('submit an ingress request with its checklist')
      .argument('<request>', 'request id')
      .requiredOption('--legal-basis <text>', 'the legal basis')
      .option('--pseudonymised', 'the data are pseudonymised')
      .option('--no-direct-identifiers', 'the data hold no direct identifiers')
      .option('--minimised', 'data minimisation')
      .option('--note <text>', 'free text for the reviewer'),
  ).action(async (id: string, o: Record<string, unknown>) => {
    o.noDirectIdentifiers = o.directIdentifiers === false;
    print(await (await client(o)).submit(id, checklistFrom(o)!));
  });
  withIngress(
    ing
      .command('review')
      .description("confirm or reject someone else's ingress request (four eyes)")
      .argument('<request>', 'request id')
      .addOption(
        new Option('--confirm', 'make the files visible in the project').conflicts('reject'),
      )
      .addOption(new Option('--reject', 'delete the files and destroy their keys'))
      .option('--reason <text>', 'why'),
  ).action(async (id: string, o: Record<string, unknown>) => {
    if (!o.confirm && !o.reject) throw new TreError(EXIT.usage, 'give --confirm or --reject');
    print(
      await (
        await client(o)
      ).review(id, o.confirm ? 'confirm' : 'reject', o.reason as string | undefined),
    );
  });
  ing.addCommand(serveCommand('serve'));

  return program;
}

/** `tre ingress serve`, also the whole of the `tre-ingress` command. */
export function serveCommand(name: string): Command {
  return new Command(name)
    .description('run the ingress service')
    .exitOverride()
    .showHelpAfterError()
    .requiredOption(
      '--root <dir>',
      'storage root (uploads, staging and project trees; one filesystem)',
    )
    .option('--port <n>', 'TCP port', intArg('--port'), 8090)
    .option('--host <addr>', 'listen address', '127.0.0.1')
    .option('--kms <url>', 'take identities and roles from this KMS')
    .option(
      '--service-token-file <path>',
      "with --kms: file holding the service's own hub token (default: $JUPYTERHUB_API_TOKEN)",
    )
    .option(
      '--users <file>',
      'take identities and roles from this file instead (isolated setups, tests)',
    )
    .option('--max-file-size <bytes>', 'largest file', intArg('--max-file-size'))
    .option('--quota <bytes>', 'per-user bytes awaiting review', intArg('--quota'))
    .option('--max-chunk <bytes>', 'largest PATCH body', intArg('--max-chunk'))
    .option('--group <gid>', 'group owning the project trees', intArg('--group'))
    .action(async (o: Record<string, unknown>) => {
      // Loaded on demand: the client commands start faster without the server's dependencies.
      const { serveIngress } = await import('./ingress/main.js');
      await serveIngress(o);
    });
}

export async function main(argv: string[], program = buildProgram()): Promise<number> {
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      )
        return EXIT.ok;
      return EXIT.usage;
    }
    if (e instanceof TreError) {
      process.stderr.write(`tre: ${e.message}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    if (err.name === 'InvalidNameError' || err.name === 'InvalidArgumentError') {
      process.stderr.write(`tre: ${err.message}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`tre: ${err.message}\n`);
    return EXIT.failure;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void main(process.argv).then((code) => {
    if (code !== EXIT.ok || !process.argv.includes('serve')) process.exit(code);
  });
}
