/** Wires database, audit log, policy core and HTTP app into a running server. */
import cluster from 'node:cluster';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { createHandler } from './app.js';
import { AuditLog, AuditSigner } from './audit.js';
import { clusterMetricsClient } from './cluster-metrics.js';
import type { Config } from './config.js';
import { migrate, openDatabase, type Db } from './db.js';
import { HubAuthenticator, type Authenticator } from './hub-auth.js';
import { Kms } from './kms.js';
import { Metrics } from './metrics.js';
import { withPrefix } from './prefix.js';

export { withPrefix } from './prefix.js';

export interface ServerOptions {
  logger?: Logger;
  /** Replaces the hub authenticator (unit tests only). */
  auth?: Authenticator;
  now?: () => Date;
  defaultMetrics?: boolean;
}

export class KmsServer {
  readonly url: string;

  private constructor(
    readonly server: Server,
    readonly kms: Kms,
    readonly db: Db,
    readonly logger: Logger,
    private readonly drain: { on: boolean },
  ) {
    const a = server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    this.url = `http://${host}:${a.port}`;
  }

  static async start(config: Config, opts: ServerOptions = {}): Promise<KmsServer> {
    const logger = opts.logger ?? pino({ level: config.logLevel, base: { service: 'tre-kms' } });
    const db = openDatabase(config.database, { synchronous: config.synchronous });
    const applied = migrate(db);
    if (applied.length) logger.info({ applied }, 'schema migrated');
    const signer = AuditSigner.loadOrCreate(config.auditKey);
    const metrics = new Metrics(opts.defaultMetrics ?? true);
    const audit = new AuditLog(db, signer, {
      checkpointEvery: config.checkpointEvery,
      ...(opts.now ? { now: opts.now } : {}),
    });
    const kms = new Kms(db, audit, {
      agreementVersion: config.agreementVersion,
      recoveryDelayMs: config.recoveryDelaySeconds * 1000,
      ...(opts.now ? { now: opts.now } : {}),
      onDecision: (action, result) => metrics.decisions.inc({ action, result }),
    });
    const auth =
      opts.auth ??
      new HubAuthenticator({
        apiUrl: config.hub.apiUrl,
        cacheSeconds: config.hub.cacheSeconds,
        services: config.hub.services,
        ...(config.hub.apiToken ? { apiToken: config.hub.apiToken } : {}),
      });
    const drain = { on: false };
    const app = createHandler({
      kms,
      auth,
      logger,
      metrics,
      ...(config.metricsToken ? { metricsToken: config.metricsToken } : {}),
      isDraining: () => drain.on,
      consoleIdleMs: config.consoleIdleMinutes * 60_000,
      ...(config.hub.oauth
        ? { oauth: config.hub.oauth, oauthClientSecret: config.hub.apiToken! }
        : {}),
      ...(cluster.isWorker ? { collectMetrics: clusterMetricsClient(metrics.registry) } : {}),
    });
    const server = createServer(config.servicePrefix ? withPrefix(config.servicePrefix, app) : app);
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const self = new KmsServer(server, kms, db, logger, drain);
    logger.info(
      {
        url: self.url,
        prefix: config.servicePrefix ?? null,
        database: config.database,
        auditKeyId: signer.keyId,
      },
      'tre-kms listening',
    );
    return self;
  }

  /**
   * Graceful stop: refuse new requests, let in-flight ones finish, sign the audit head, close
   * the database. Connections still busy after `graceMs` are cut.
   */
  async close(graceMs = 10_000): Promise<void> {
    if (this.drain.on) return;
    this.drain.on = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), graceMs);
    await closed;
    clearTimeout(timer);
    const cp = this.kms.audit.checkpoint();
    this.db.close();
    this.logger.info({ checkpoint: cp?.seq ?? null }, 'tre-kms stopped');
  }
}
