#!/usr/bin/env node
/**
 * trefs command line. Exit codes (also in README):
 *   0 ok / unmounted cleanly     2 usage error              3 key input unreadable or invalid
 *   4 wrong key                  5 key service unreachable  6 not a member / access ended
 *   7 bad cipher directory       8 mount failed             1 anything else
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { EXIT, KeyInputError, KmsUnreachableError, TrefsError } from './errors.js';
import { FileKeyService } from './file-key-service.js';
import { readKeyInput } from './kek-input.js';
import type { KeyService } from './key-source.js';
import { KmsKeyService } from './kms-key-service.js';
import { createLogger } from './logger.js';
import { mountTrefs, unmountPath } from './mount.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function intArg(name: string, min: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return n;
  };
}

interface MountFlags {
  project: string;
  kms: string;
  keyFd?: number;
  readOnly?: boolean;
  keyAgent?: string;
  pollMs: number;
  logLevel: string;
}

async function mountCommand(cipherDir: string, mountpoint: string, flags: MountFlags) {
  const log = createLogger(flags.logLevel);
  const input = await readKeyInput(flags.keyFd ?? 0);
  let service: KeyService;
  if (flags.kms.startsWith('file:')) {
    try {
      service = new FileKeyService(flags.kms.slice('file:'.length));
    } catch (err) {
      throw new KmsUnreachableError(`cannot read the key service file: ${(err as Error).message}`);
    }
  } else if (/^https?:\/\//.test(flags.kms)) {
    if (!input.kmsToken) {
      throw new KeyInputError('--kms over HTTP needs "kmsToken" in the key input');
    }
    service = new KmsKeyService(flags.kms, input.kmsToken, flags.project, log);
  } else {
    throw new TrefsError(`--kms must be an http(s):// URL or file:<path>`, EXIT.usage);
  }
  const mounted = await mountTrefs({
    cipherDir,
    mountpoint,
    service,
    kek: input.kek,
    readOnly: flags.readOnly ?? false,
    log,
    pollMs: flags.pollMs,
    ...(flags.keyAgent ? { keyAgentSocket: flags.keyAgent } : {}),
  });
  // Readiness line on stdout for the job agent; details go to the log on stderr.
  process.stdout.write(`trefs: mounted ${cipherDir} on ${mountpoint}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    process.once('SIGHUP', stop);
  });
  await mounted.unmount();
}

export function program(): Command {
  const cmd = new Command('trefs')
    .description('Per-file-key encrypted filesystem of the TRE (gocryptfs-compatible on disk)')
    .version(version())
    .exitOverride()
    .showHelpAfterError();
  cmd
    .command('mount')
    .description(
      'mount a project cipher directory; the KEK is read from --key-fd (default: stdin) as JSON',
    )
    .argument('<cipherdir>', 'the project cipher directory')
    .argument('<mountpoint>', 'where the plaintext view appears')
    .requiredOption('--project <id>', 'project id')
    .requiredOption('--kms <url>', 'KMS base URL, or file:<path> for a local key service file')
    .addOption(
      new Option('--key-fd <n>', 'inherited file descriptor carrying the key').argParser(
        intArg('--key-fd', 0),
      ),
    )
    .option('--read-only', 'mount read-only')
    .option('--key-agent <socket>', 'serve the gocryptfs -kms key agent on this unix socket')
    .addOption(
      new Option('--poll-ms <ms>', 'membership poll interval')
        .default(1000)
        .argParser(intArg('--poll-ms', 100)),
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .default('info')
        .choices(['debug', 'info', 'warn', 'error']),
    )
    .action(mountCommand);
  cmd
    .command('unmount')
    .description('unmount a trefs mountpoint')
    .argument('<mountpoint>')
    .action(async (mountpoint: string) => {
      try {
        await unmountPath(mountpoint);
      } catch (err) {
        throw new TrefsError(
          `cannot unmount ${mountpoint}: ${(err as Error).message}`,
          EXIT.mountFailed,
        );
      }
    });
  return cmd;
}

async function main(): Promise<number> {
  try {
    await program().parseAsync(process.argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (err instanceof TrefsError) {
      process.stderr.write(`trefs: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`trefs: unexpected error: ${(err as Error).message}\n`);
    return EXIT.internal;
  }
}

main().then((code) => process.exit(code));
