#!/usr/bin/env node
/**
 * tre-job-agent run --bridge URL --session ID
 * The batch script starts this with the one-time pickup token on standard input (never argv or
 * the environment). The job id comes from Slurm (SLURM_JOB_ID) or the bridge's local executor.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Command } from 'commander';
import pino from 'pino';
import { JobAgent } from './agent.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };
const program = new Command('tre-job-agent').description('TRE session job agent').version(version);

program
  .command('run')
  .description('collect the session, start the container and bridge the hub to it')
  .requiredOption('--bridge <url>', 'the bridge URL')
  .requiredOption('--session <id>', 'the session id')
  .action(async (opts: { bridge: string; session: string }) => {
    const logger = pino({ base: { session: opts.session } });
    const token = readFileSync(0, 'utf8').trim();
    const jobId = process.env.SLURM_JOB_ID ?? process.env.TRE_LOCAL_JOB_ID;
    if (!token || !jobId) {
      logger.error('no pickup token on stdin or no job id (SLURM_JOB_ID / TRE_LOCAL_JOB_ID)');
      process.exit(2);
    }
    const agent = new JobAgent({
      bridgeUrl: opts.bridge,
      sessionId: opts.session,
      jobId,
      token,
      logger,
    });
    const stop = (signal: string) => {
      logger.info({ event: 'signal', signal }, 'stopping the session');
      agent.shutdown().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.exit(await agent.run());
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`tre-job-agent: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
