#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isLoopbackHost, parseListen, parseTarget } from './address.js';
import {
  createTicketKeyFile,
  DEFAULT_TICKET_TTL_SECONDS,
  hubAuthenticator,
  insecureNoAuthenticator,
  issueTicket,
  readTicketKey,
  ticketAuthenticator,
  type Authenticator,
} from './auth.js';
import { DesktopProxyError } from './errors.js';
import { createLogger } from './logging.js';
import { ProxyMetrics } from './metrics.js';
import { createDesktopProxy } from './server.js';

/** Exit codes, as documented in the README and --help. */
export const EXIT = { ok: 0, runtime: 1, usage: 2 } as const;

const HELP_FOOTER = `
Authentication (choose one):
  --auth hub        a JupyterHub API token (Authorization header, ?token= or the
                    tre-desktop-token cookie) that the hub says belongs to --user
  --auth ticket     a signed short-lived ticket (?ticket=) for --user and --session,
                    issued with "desktop-proxy ticket"
  --insecure-no-auth
                    development only; refused unless --listen is a loopback address

Exit codes:
  0  stopped cleanly (SIGINT/SIGTERM), or a subcommand succeeded
  1  runtime failure (e.g. the listen address is in use)
  2  invalid usage or configuration (including --insecure-no-auth on a non-loopback address)

Examples:
  desktop-proxy --listen 127.0.0.1:6080 --target unix:/run/vnc/sock --insecure-no-auth
  desktop-proxy --listen 0.0.0.0:6080 --target unix:/run/vnc/sock --auth ticket \\
      --user alice --session job-42 --ticket-key-file /etc/tre/desktop-ticket.key
  desktop-proxy ticket --ticket-key-file /etc/tre/desktop-ticket.key --user alice --session job-42
`;

class UsageError extends Error {}

function positiveInt(name: string, allowZero = false) {
  return (text: string): number => {
    if (!/^\d+$/.test(text) || (!allowZero && Number(text) === 0)) {
      throw new InvalidArgumentError(
        `${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer`,
      );
    }
    return Number(text);
  };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function version(): string {
  const pkg = createRequire(import.meta.url)('../package.json') as { version: string };
  return pkg.version;
}

interface ServeOptions {
  listen?: string;
  target?: string;
  auth?: 'hub' | 'ticket';
  insecureNoAuth?: boolean;
  hubApi?: string;
  user?: string;
  session?: string;
  ticketKeyFile?: string;
  allowedOrigin: string[];
  frameAncestor: string[];
  tlsCert?: string;
  tlsKey?: string;
  idleTimeout: number;
  maxConnections: number;
  logLevel: string;
}

async function buildAuth(o: ServeOptions): Promise<Authenticator> {
  if (o.insecureNoAuth) {
    if (o.auth) throw new UsageError('--insecure-no-auth cannot be combined with --auth');
    return insecureNoAuthenticator(o.user ?? 'anonymous');
  }
  if (o.auth === 'hub') {
    if (!o.hubApi || !o.user) throw new UsageError('--auth hub needs --hub-api and --user');
    return hubAuthenticator({ hubApi: o.hubApi, user: o.user });
  }
  if (o.auth === 'ticket') {
    if (!o.ticketKeyFile || !o.user || !o.session) {
      throw new UsageError('--auth ticket needs --ticket-key-file, --user and --session');
    }
    const key = await readTicketKey(o.ticketKeyFile);
    return ticketAuthenticator({ key, user: o.user, session: o.session });
  }
  throw new UsageError('choose --auth hub, --auth ticket or (for development) --insecure-no-auth');
}

async function serve(o: ServeOptions): Promise<number> {
  if (!o.listen || !o.target) throw new UsageError('--listen and --target are required');
  const listen = parseListen(o.listen);
  const target = parseTarget(o.target);
  if (o.insecureNoAuth && !isLoopbackHost(listen.host)) {
    process.stderr.write(
      `desktop-proxy: REFUSING TO START: --insecure-no-auth would let anyone who can reach ` +
        `${listen.host} control the desktop. Use a loopback address (127.0.0.1 or ::1) or ` +
        `--auth hub|ticket.\n`,
    );
    return EXIT.usage;
  }
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey))
    throw new UsageError('--tls-cert and --tls-key go together');
  const auth = await buildAuth(o);
  const tls =
    o.tlsCert && o.tlsKey
      ? { cert: await readFile(o.tlsCert), key: await readFile(o.tlsKey) }
      : undefined;
  if (o.insecureNoAuth) {
    process.stderr.write(
      '\n*** desktop-proxy: AUTHENTICATION IS OFF (--insecure-no-auth). For local development only. ***\n\n',
    );
  }
  const logger = createLogger({ level: o.logLevel });
  const proxy = createDesktopProxy({
    target,
    auth,
    allowedOrigins: o.allowedOrigin,
    frameAncestors: o.frameAncestor,
    ...(tls ? { tls } : {}),
    idleTimeoutSeconds: o.idleTimeout,
    maxConnections: o.maxConnections,
    logger,
    metrics: new ProxyMetrics({ processMetrics: true }),
  });
  try {
    await proxy.listen(listen.port, listen.host);
  } catch (err) {
    if (err instanceof DesktopProxyError) throw err;
    process.stderr.write(
      `desktop-proxy: cannot listen on ${o.listen}: ${(err as NodeJS.ErrnoException).code ?? err}\n`,
    );
    return EXIT.runtime;
  }
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await proxy.close();
  logger.flush();
  return EXIT.ok;
}

/** Builds the command tree; the serve action reports its exit code through `result`. */
export function buildProgram(result: { exitCode: number }): Command {
  const program = new Command('desktop-proxy')
    .description(
      'WebSocket proxy from noVNC to a VNC server, with an RFB-aware clipboard firewall.\n' +
        'Without a subcommand it runs the proxy.',
    )
    .version(version())
    .exitOverride()
    .showHelpAfterError()
    // Options after a subcommand's name belong to the subcommand (both have --user).
    .enablePositionalOptions()
    // Required in the action, not by commander: subcommands must not need them.
    .option('--listen <host:port>', 'address to listen on, e.g. 127.0.0.1:6080')
    .option('--target <unix:/path|host:port>', 'the VNC server')
    .addOption(new Option('--auth <mode>', 'authentication mode').choices(['hub', 'ticket']))
    .option('--insecure-no-auth', 'no authentication (development; loopback --listen only)')
    .option('--hub-api <url>', 'JupyterHub API base, e.g. http://127.0.0.1:8081/hub/api')
    .option('--user <name>', 'the session owner: the only user allowed to connect')
    .option('--session <id>', 'the session id tickets must name (ticket mode)')
    .option('--ticket-key-file <file>', 'HMAC key for tickets (mode 0600, >= 32 bytes)')
    .option(
      '--allowed-origin <origin>',
      'another origin allowed to open the WebSocket (repeatable)',
      collect,
      [],
    )
    .option(
      '--frame-ancestor <source>',
      "a CSP source allowed to frame the page (repeatable; default 'self')",
      collect,
      [],
    )
    .option('--tls-cert <file>', 'serve HTTPS/WSS with this PEM certificate chain')
    .option('--tls-key <file>', 'the PEM private key for --tls-cert')
    .option(
      '--idle-timeout <seconds>',
      'close sessions idle this long; 0 = never',
      positiveInt('--idle-timeout', true),
      1800,
    )
    .option(
      '--max-connections <n>',
      'concurrent sessions allowed',
      positiveInt('--max-connections'),
      4,
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(['debug', 'info', 'warn', 'error'])
        .default('info'),
    )
    .action(async (o: ServeOptions) => {
      result.exitCode = await serve(o);
    });

  program
    .command('ticket')
    .description('issue a short-lived ticket for one user and session; prints it on stdout')
    .requiredOption('--ticket-key-file <file>', 'the HMAC key the proxy verifies tickets with')
    .requiredOption('--user <name>', 'the session owner')
    .requiredOption('--session <id>', 'the session id')
    .option(
      '--ttl <seconds>',
      'lifetime (at most 3600)',
      positiveInt('--ttl'),
      DEFAULT_TICKET_TTL_SECONDS,
    )
    .action(async (o: { ticketKeyFile: string; user: string; session: string; ttl: number }) => {
      const key = await readTicketKey(o.ticketKeyFile);
      process.stdout.write(
        `${issueTicket(key, { user: o.user, session: o.session, ttlSeconds: o.ttl })}\n`,
      );
    });

  program
    .command('keygen')
    .description('create a new random ticket key file (mode 0600); never overwrites')
    .requiredOption('--ticket-key-file <file>', 'where to write the key')
    .action(async (o: { ticketKeyFile: string }) => {
      await createTicketKeyFile(o.ticketKeyFile);
    });

  program.addHelpText('after', HELP_FOOTER);
  return program;
}

/** Runs the CLI and returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const result: { exitCode: number } = { exitCode: EXIT.ok };
  const program = buildProgram(result);
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return EXIT.ok;
      }
      return EXIT.usage;
    }
    if (err instanceof UsageError || err instanceof DesktopProxyError) {
      process.stderr.write(`desktop-proxy: ${err.message}\n`);
      return EXIT.usage;
    }
    process.stderr.write(`desktop-proxy: ${(err as Error).message}\n`);
    return EXIT.runtime;
  }
  return result.exitCode;
}

function isEntryPoint(): boolean {
  const invoked = process.argv[1];
  if (!invoked) return false;
  try {
    return realpathSync(invoked) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  process.exitCode = await main(process.argv.slice(2));
}
