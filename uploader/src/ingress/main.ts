/** `tre ingress serve`: runs the ingress service until SIGINT/SIGTERM. */
import { readFile } from 'node:fs/promises';
import { pino } from 'pino';
import { KmsAuthority, StaticAuthority } from './authority.js';
import type { IngressAuthority } from './authority.js';
import { IngressServer } from './server.js';
import { EXIT, TreError } from '../errors.js';

export async function serveIngress(o: Record<string, unknown>): Promise<IngressServer> {
  let authority: IngressAuthority;
  if (o.kms && !o.users) {
    // The service's own hub token: JupyterHub hands a managed service JUPYTERHUB_API_TOKEN.
    const token = o.serviceTokenFile
      ? (await readFile(String(o.serviceTokenFile), 'utf8')).trim()
      : (process.env.JUPYTERHUB_API_TOKEN ?? '').trim();
    if (!token) {
      throw new TreError(
        EXIT.usage,
        'with --kms the service needs its hub service token: --service-token-file or $JUPYTERHUB_API_TOKEN',
      );
    }
    authority = new KmsAuthority(String(o.kms), token);
  } else if (o.users && !o.kms) authority = await StaticAuthority.fromFile(String(o.users));
  else throw new TreError(EXIT.usage, 'give exactly one of --kms or --users');
  const logger = pino({ name: 'tre-ingress' }, pino.destination(2));
  const server = await IngressServer.create({
    root: String(o.root),
    authority,
    logger,
    ...(o.maxFileSize !== undefined ? { maxFileSize: o.maxFileSize as number } : {}),
    ...(o.quota !== undefined ? { quotaBytes: o.quota as number } : {}),
    ...(o.maxChunk !== undefined ? { maxChunkBytes: o.maxChunk as number } : {}),
    ...(o.group !== undefined ? { groupId: o.group as number } : {}),
  });
  const port = await server.listen(o.port as number, String(o.host));
  logger.info({ port, host: o.host }, 'listening');
  // Tests and supervisors read the port from stdout.
  process.stdout.write(`listening on ${String(o.host)}:${port}\n`);
  const stop = (): void => {
    void server.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return server;
}
