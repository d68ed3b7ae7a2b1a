#!/usr/bin/env node
/**
 * tre-crypt: operator and recovery tool for gocryptfs-compatible volumes.
 *
 *   tre-crypt init    --passfile F [--scryptn LOGN] [--masterkey-stdin] <cipherdir>
 *   tre-crypt encrypt (--passfile F | --masterkey-stdin) <plaindir> <cipherdir>
 *   tre-crypt decrypt (--passfile F | --masterkey-stdin) <cipherdir> <plaindir>
 *   tre-crypt xray    <file>
 *
 * Exit codes: 0 success, 1 failure, 2 usage error, 3 wrong passphrase or master key, or
 * authentication failure (tampered data), 130 interrupted. Failures print one line on
 * stderr; keys and passphrases are never printed.
 */
import { SingleBar } from 'cli-progress';
import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import {
  AuthenticationError,
  CryptoError,
  InvalidArgumentError,
  WrongPassphraseError,
} from '../errors.js';
import { DEFAULT_SCRYPT } from '../kdf.js';
import {
  decryptTree,
  encryptTree,
  initVolume,
  openVolume,
  type TreeProgress,
  type Unlock,
  type Volume,
} from '../volume.js';
import { parseMasterKeyHex, readPassFile, readStdin } from './secrets.js';
import { xray } from './xray.js';

const EXIT = { ok: 0, failure: 1, usage: 2, auth: 3, interrupted: 130 } as const;

/**
 * SIGINT/SIGTERM abort the running tree operation, which then removes its temporary files
 * (and, for decrypt, the half-built folder) before the process exits with 130.
 */
const interrupt = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => interrupt.abort(new Error(`interrupted by ${sig}`)));
}

class UsageError extends Error {}

const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

interface KeyOptions {
  passfile?: string;
  masterkeyStdin?: boolean;
}

async function masterKeyFromStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) throw new UsageError('--masterkey-stdin needs the key piped on stdin');
  try {
    return parseMasterKeyHex(await readStdin());
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new UsageError(err.message);
    throw err;
  }
}

async function unlockFrom(opts: KeyOptions): Promise<Unlock> {
  if (Boolean(opts.passfile) === Boolean(opts.masterkeyStdin)) {
    throw new UsageError('give exactly one of --passfile and --masterkey-stdin');
  }
  return opts.passfile
    ? { passphrase: await readPassFile(opts.passfile) }
    : { masterKey: await masterKeyFromStdin() };
}

function wipe(unlock: Unlock): void {
  ('passphrase' in unlock ? unlock.passphrase : unlock.masterKey).fill(0);
}

/** A progress bar on stderr, only when a person is watching it. */
function progressBar(label: string): { options: TreeProgress; stop: () => void } {
  if (!process.stderr.isTTY) return { options: {}, stop: () => {} };
  const bar = new SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {mib}/{totalMib} MiB | {files}/{totalFiles} files | ETA {eta_formatted}`,
    hideCursor: true,
    clearOnComplete: true,
  });
  let started = false;
  const mib = (n: number) => (n / 1048576).toFixed(1);
  return {
    options: {
      onProgress: (done, total, files, totalFiles) => {
        const payload = { mib: mib(done), totalMib: mib(total), files, totalFiles };
        if (!started) {
          bar.start(Math.max(total, 1), done, payload);
          started = true;
        } else {
          bar.update(done, payload);
        }
      },
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

async function withVolume<T>(
  cipherDir: string,
  opts: KeyOptions,
  fn: (v: Volume) => Promise<T>,
): Promise<T> {
  const unlock = await unlockFrom(opts);
  let volume: Volume;
  try {
    volume = await openVolume(cipherDir, unlock);
  } finally {
    wipe(unlock);
  }
  try {
    return await fn(volume);
  } finally {
    volume.close();
  }
}

function summary(
  verb: string,
  r: { files: number; directories: number; bytes: number },
  where: string,
): string {
  return `${verb} ${r.files} files, ${r.directories} directories, ${r.bytes} bytes ${where}`;
}

function parseLogN(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 10 || n > 28) {
    throw new UsageError('--scryptn takes log2(N), an integer from 10 to 28');
  }
  return n;
}

function buildProgram(): Command {
  const program = new Command('tre-crypt')
    .description('Create, fill, decrypt and inspect gocryptfs-compatible encrypted volumes.')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .exitOverride()
    .showSuggestionAfterError(false)
    .configureOutput({
      outputError: (str, write) => write(`tre-crypt: ${str.replace(/^error: /, '').trim()}\n`),
    })
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 failure, 2 usage error, 3 wrong passphrase/key or tampered data, 130 interrupted.',
    );

  const passfile = () =>
    new Option('--passfile <file>', 'read the passphrase from the first line of <file>');
  const masterkeyStdin = () =>
    new Option(
      '--masterkey-stdin',
      'read the master key as hex from stdin (dashes allowed)',
    ).conflicts('passfile');

  program
    .command('init')
    .description(
      'create a new volume (gocryptfs.conf + gocryptfs.diriv) in an empty or new directory',
    )
    .argument('<cipherdir>', 'directory for the encrypted volume')
    .addOption(passfile().makeOptionMandatory())
    .option('--scryptn <logN>', `scrypt cost as log2(N)`, String(Math.log2(DEFAULT_SCRYPT.N)))
    .option(
      '--masterkey-stdin',
      'wrap the master key given as hex on stdin instead of a new random one',
    )
    .action(
      async (
        cipherDir: string,
        opts: { passfile: string; scryptn: string; masterkeyStdin?: boolean },
      ) => {
        const logN = parseLogN(opts.scryptn);
        const passphrase = await readPassFile(opts.passfile);
        const masterKey = opts.masterkeyStdin ? await masterKeyFromStdin() : undefined;
        try {
          const volume = await initVolume(cipherDir, passphrase, {
            scrypt: { ...DEFAULT_SCRYPT, N: 2 ** logN },
            ...(masterKey ? { masterKey } : {}),
          });
          volume.close();
        } finally {
          passphrase.fill(0);
          masterKey?.fill(0);
        }
        process.stdout.write(`created a gocryptfs volume in ${cipherDir}\n`);
      },
    );

  program
    .command('encrypt')
    .description('encrypt a plaintext tree into an existing volume (names and contents)')
    .argument('<plaindir>', 'plaintext directory to encrypt')
    .argument('<cipherdir>', 'volume to encrypt into')
    .addOption(passfile())
    .addOption(masterkeyStdin())
    .action(async (plainDir: string, cipherDir: string, opts: KeyOptions) => {
      const result = await withVolume(cipherDir, opts, async (volume) => {
        const bar = progressBar('encrypting');
        try {
          return await encryptTree(volume, plainDir, { ...bar.options, signal: interrupt.signal });
        } finally {
          bar.stop();
        }
      });
      process.stdout.write(summary('encrypted', result, `into ${cipherDir}`) + '\n');
    });

  program
    .command('decrypt')
    .description('decrypt a whole volume into a new folder (names and contents)')
    .argument('<cipherdir>', 'volume to decrypt')
    .argument('<plaindir>', 'new folder for the plaintext (must not exist, or be empty)')
    .addOption(passfile())
    .addOption(masterkeyStdin())
    .action(async (cipherDir: string, plainDir: string, opts: KeyOptions) => {
      const result = await withVolume(cipherDir, opts, async (volume) => {
        const bar = progressBar('decrypting');
        try {
          return await decryptTree(volume, plainDir, {
            ...bar.options,
            signal: interrupt.signal,
            onWarning: (m) => process.stderr.write(`tre-crypt: warning: ${m}\n`),
          });
        } finally {
          bar.stop();
        }
      });
      process.stdout.write(summary('decrypted', result, `into ${plainDir}`) + '\n');
    });

  program
    .command('xray')
    .description('print the header and block layout of an encrypted file, as gocryptfs-xray does')
    .argument('<file>', 'an encrypted file from a volume')
    .action(async (file: string) => {
      await xray(file, (line) => process.stdout.write(line + '\n'));
    });

  return program;
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  if (argv.length <= 2) {
    process.stderr.write('tre-crypt: missing command (init, encrypt, decrypt, xray); see --help\n');
    return EXIT.usage;
  }
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (interrupt.signal.aborted) {
      process.stderr.write(`tre-crypt: ${String((interrupt.signal.reason as Error).message)}\n`);
      return EXIT.interrupted;
    }
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`tre-crypt: ${oneLine(message)}\n`);
    if (err instanceof UsageError) return EXIT.usage;
    if (err instanceof WrongPassphraseError || err instanceof AuthenticationError) return EXIT.auth;
    if (err instanceof CryptoError && err.code === 'AUTHENTICATION_FAILED') return EXIT.auth;
    return EXIT.failure;
  }
}

process.exitCode = await main(process.argv);
