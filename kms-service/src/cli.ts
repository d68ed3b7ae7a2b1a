#!/usr/bin/env node
/**
 * tre-kms: serve | migrate | backup <file> | audit verify <export> | audit export.
 * Exit codes: 0 success, 1 failure (including a broken audit log), 2 bad usage or configuration.
 */
import cluster from 'node:cluster';
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Command, CommanderError } from 'commander';
import { pino } from 'pino';
import { AuditSigner, AuditVerifier, exportLines } from './audit.js';
import { serveClusterMetrics } from './cluster-metrics.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { migrate, openDatabase } from './db.js';
import { KmsServer } from './server.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

class UsageError extends Error {}

function configFrom(opts: { config?: string }): Config {
  return loadConfig(opts.config);
}

/** Offline commands need only the database; the hub URL does not matter to them. */
function offlineConfig(opts: { config?: string }): Config {
  return loadConfig(opts.config, { JUPYTERHUB_API_URL: 'http://127.0.0.1:1/', ...process.env });
}

function signerPublicPem(config: Config): string {
  const pub = `${config.auditKey}.pub`;
  if (existsSync(pub)) return readFileSync(pub, 'utf8');
  if (existsSync(config.auditKey)) return AuditSigner.loadOrCreate(config.auditKey).publicKeyPem();
  throw new UsageError(`no audit signing key at ${config.auditKey}`);
}

/**
 * With `workers` > 1 this process migrates the database, makes sure the audit key exists, then
 * forks the workers (which serve on one shared port) and replaces any that dies; SIGTERM and
 * SIGINT are passed on, and it exits once every worker has shut down gracefully.
 */
async function supervise(config: Config): Promise<void> {
  const logger = pino({ level: config.logLevel, base: { service: 'tre-kms', role: 'primary' } });
  const db = openDatabase(config.database, { synchronous: config.synchronous });
  const applied = migrate(db);
  db.close();
  if (applied.length) logger.info({ applied }, 'schema migrated');
  AuditSigner.loadOrCreate(config.auditKey);
  let stopping = false;
  let failed = false;
  serveClusterMetrics();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (code !== 0 && signal !== 'SIGTERM') failed = true;
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(failed ? 1 : 0);
      return;
    }
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    cluster.fork();
  });
  for (let i = 0; i < config.workers; i++) cluster.fork();
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function serve(opts: { config?: string }): Promise<void> {
  const config = configFrom(opts);
  if (config.workers > 1 && cluster.isPrimary) {
    await supervise(config);
    return;
  }
  // Handlers first: a signal during start-up (a worker still loading) is a clean exit too.
  const running: { server?: KmsServer } = {};
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    const server = running.server;
    if (!server) process.exit(0);
    server.logger.info({ signal }, 'shutting down');
    server.close().then(
      () => process.exit(0),
      (e: unknown) => {
        server.logger.error({ err: (e as Error).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  running.server = await KmsServer.start(config);
}

async function verifyExport(file: string, opts: { publicKey?: string }): Promise<number> {
  if (!existsSync(file)) throw new UsageError(`no such file: ${file}`);
  const publicKeyPem = opts.publicKey ? readFileSync(opts.publicKey, 'utf8') : undefined;
  const v = new AuditVerifier(publicKeyPem ? { publicKeyPem } : {});
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of rl) {
    if (!v.push(line)) break;
  }
  rl.close();
  const r = v.finish();
  if (!r.ok) {
    process.stderr.write(
      `audit log BROKEN at line ${r.line}${r.seq !== null ? ` (entry ${r.seq})` : ''}: ${r.message}\n`,
    );
    return 1;
  }
  const unsigned = r.head.seq - r.signedSeq;
  process.stdout.write(
    `audit log OK: ${r.entries} entries, ${r.checkpoints} signed checkpoints, head ${r.head.seq} ${r.head.hash}` +
      (opts.publicKey
        ? ', signatures checked against the given key'
        : ', signatures checked against the key named in the export (pass --public-key to pin it)') +
      (unsigned > 0 ? `; the last ${unsigned} entries follow the newest checkpoint` : '') +
      '\n',
  );
  return 0;
}

async function exportAudit(opts: { config?: string; output?: string }): Promise<void> {
  const config = offlineConfig(opts);
  if (!existsSync(config.database)) throw new UsageError(`no database at ${config.database}`);
  const db = openDatabase(config.database, { readonly: true });
  try {
    const out = opts.output
      ? createWriteStream(opts.output, { flags: 'wx', mode: 0o600 })
      : process.stdout;
    for (const line of exportLines(db, signerPublicPem(config))) {
      if (!out.write(line + '\n')) await once(out, 'drain');
    }
    if (out !== process.stdout) {
      out.end();
      await once(out, 'finish');
    }
  } finally {
    db.close();
  }
}

export function buildCli(): Command {
  const program = new Command('tre-kms')
    .description(
      'The TRE key-management service: people, projects, wrapped keys, audit log, vault.',
    )
    .version(pkg.version)
    .exitOverride()
    .showHelpAfterError();
  const cfg = (c: Command): Command =>
    c.option(
      '-c, --config <file>',
      'YAML or JSON configuration file (environment variables override it)',
    );

  cfg(
    program
      .command('serve')
      .description('run the HTTP service (SIGTERM: finish requests, sign the audit head, exit)'),
  ).action(async (opts: { config?: string }) => serve(opts));
  cfg(program.command('migrate').description('create or upgrade the database schema')).action(
    (opts: { config?: string }) => {
      const config = offlineConfig(opts);
      const db = openDatabase(config.database);
      try {
        const applied = migrate(db);
        process.stdout.write(
          applied.length ? `applied migrations ${applied.join(', ')}\n` : 'schema is up to date\n',
        );
      } finally {
        db.close();
      }
    },
  );
  cfg(
    program
      .command('backup <file>')
      .description('write a consistent copy of the database, also while the service runs'),
  ).action(async (file: string, opts: { config?: string }) => {
    const config = offlineConfig(opts);
    if (existsSync(file)) throw new UsageError(`${file} exists; choose a new file`);
    if (!existsSync(config.database)) throw new UsageError(`no database at ${config.database}`);
    const db = openDatabase(config.database, { readonly: true });
    try {
      await db.backup(file);
    } finally {
      db.close();
    }
    process.stdout.write(`backup written to ${file}\n`);
  });
  const audit = program
    .command('audit')
    .description('verify or export the tamper-evident audit log');
  audit
    .command('verify <export>')
    .description('check an exported log offline; names the first broken entry')
    .option('--public-key <pem>', 'the checkpoint signing public key to trust (PEM file)')
    .action(async (file: string, opts: { publicKey?: string }) => {
      process.exitCode = await verifyExport(file, opts);
    });
  cfg(
    audit
      .command('export')
      .description('write the audit log as JSON lines')
      .option('-o, --output <file>', 'write to a new file instead of stdout'),
  ).action(async (opts: { config?: string; output?: string }) => exportAudit(opts));
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof UsageError || e instanceof ConfigError) {
      process.stderr.write(`tre-kms: ${e.message}\n`);
      return 2;
    }
    process.stderr.write(`tre-kms: ${(e as Error).message}\n`);
    return 1;
  }
}

const code = await main(process.argv);
if (code !== 0) process.exitCode = code;
