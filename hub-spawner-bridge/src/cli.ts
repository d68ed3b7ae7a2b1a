#!/usr/bin/env node
/** tre-bridge: run the hub-spawner-bridge, or create its API token file. */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { loadConfig } from './config.js';
import { BridgeError } from './errors.js';
import { createLogger, startBridge } from './server.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };
const program = new Command('tre-bridge').description('TRE hub-spawner-bridge').version(version);

program
  .command('serve')
  .description('run the bridge API and gateway')
  .requiredOption('-c, --config <file>', 'configuration file (YAML)')
  .action(async (opts: { config: string }) => {
    const config = loadConfig(opts.config);
    const logger = createLogger(config.logLevel);
    const bridge = await startBridge(config, logger);
    const shutdown = (signal: string) => {
      logger.info({ event: 'shutdown', signal }, 'stopping');
      bridge.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });

program
  .command('token')
  .description('create a new API token file (mode 0600) for the spawner shim')
  .argument('<file>', 'where to write it; never overwrites')
  .action((file: string) => {
    writeFileSync(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  });

program.parseAsync().catch((err: unknown) => {
  const message = err instanceof BridgeError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`tre-bridge: ${message}\n`);
  process.exit(err instanceof BridgeError && err.code === 'config' ? 2 : 1);
});
