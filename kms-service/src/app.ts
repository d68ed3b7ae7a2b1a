/**
 * The HTTP shell: OpenAPI validation, hub authentication, thin routes onto {@link Kms}, errors as
 * JSON. Routes only translate; every decision happens in the policy, every change in Kms.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import { exportLines } from './audit.js';
import { mountConsole } from './console.js';
import { ConsoleAuth } from './console-auth.js';
import type { OAuthClientConfig } from './config.js';
import { Egress } from './egress.js';
import { egressRoutes } from './egress-routes.js';
import { KmsError } from './errors.js';
import { HubUnavailableError, tokenFromHeader, type Authenticator } from './hub-auth.js';
import type { HubUser, Kms } from './kms.js';
import type { Metrics } from './metrics.js';
import { OpenApiValidator, RequestValidationError } from './openapi.js';

export const OPENAPI_PATH = fileURLToPath(new URL('../openapi.yaml', import.meta.url));

export interface AppOptions {
  kms: Kms;
  auth: Authenticator;
  logger: Logger;
  metrics: Metrics;
  /** If set, /metrics requires `Authorization: Bearer <this>`. */
  metricsToken?: string;
  /** Set while shutting down: new requests get 503. */
  isDraining?: () => boolean;
  /** The whole service's metrics text when there are several workers (cluster-metrics.ts). */
  collectMetrics?: () => Promise<string>;
  /** The console's sign-in through the hub (absent: console sessions from API tokens only). */
  oauth?: OAuthClientConfig;
  /** The KMS's hub API token, the OAuth client's secret. */
  oauthClientSecret?: string;
  /** A console session unused for this long ends. */
  consoleIdleMs?: number;
}

declare module 'express-serve-static-core' {
  interface Request {
    user?: HubUser;
  }
}

/** Resolves when the response can take more data or has gone away; leaves no listeners behind. */
function writable(res: Response): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** JSON text out without express's res.json/res.send layers (etag, freshness, type lookup). */
function sendJsonText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Route handler wrapper: sync or async handlers, errors to the error middleware. */
type Handler = (req: Request, res: Response) => unknown;
const h =
  (fn: Handler) =>
  (req: Request, res: Response, next: NextFunction): void => {
    try {
      const r = fn(req, res);
      if (r instanceof Promise) r.catch(next);
    } catch (e) {
      next(e);
    }
  };

function user(req: Request): HubUser {
  // The auth middleware runs before every /v1 route except the public key.
  return req.user!;
}

function param(req: Request, name: string): string {
  return String(req.params[name]);
}

/** The single file-key release, the hottest request: matched here before express sees it. */
const RELEASE_PATH = /^\/v1\/projects\/[^/?]+\/files\/[^/?]+\/key$/;
const RELEASE_TEMPLATE = '/v1/projects/{projectId}/files/{fileId}/key';

/**
 * The KMS's request listener: express for every route, except that a single file-key release
 * without a query string takes a lane of its own. It makes the same checks in the same order
 * (draining, token, OpenAPI validation, policy, audit) with the same error bodies, but skips
 * express's router layers, body parser and response helpers, which cost more CPU than the
 * release itself.
 */
export function createHandler(opts: AppOptions): RequestListener {
  const { app, api, errorResponse } = createApp(opts);
  const { kms, auth, logger, metrics } = opts;
  const fail = (res: ServerResponse, err: unknown, method: string, path: string): void => {
    const { status, body } = errorResponse(err, method, path);
    sendJsonText(res, status, JSON.stringify(body));
  };
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '/';
    // Only API clients (a token in the header) take the lane; a console session goes by express.
    if (
      req.method !== 'GET' ||
      !RELEASE_PATH.test(url) ||
      opts.isDraining?.() ||
      req.headers.authorization === undefined
    ) {
      app(req, res);
      return;
    }
    const start = process.hrtime.bigint();
    let username: string | undefined;
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      metrics.requests.observe(
        { method: 'GET', route: RELEASE_TEMPLATE, status: res.statusCode },
        seconds,
      );
      if (res.statusCode < 400) metrics.keyReleases.inc();
      if (res.statusCode >= 500) {
        logger.error(
          { method: 'GET', route: RELEASE_TEMPLATE, status: res.statusCode, user: username },
          'request failed',
        );
      } else if (logger.isLevelEnabled('debug')) {
        logger.debug(
          {
            method: 'GET',
            route: RELEASE_TEMPLATE,
            status: res.statusCode,
            user: username,
            ms: seconds * 1000,
          },
          'request',
        );
      }
    });
    // A GET carries no body; one announced anyway is drained, as express would ignore it.
    req.resume();
    const token = tokenFromHeader(req.headers.authorization);
    if (!token) {
      fail(
        res,
        new KmsError(401, 'unauthorized', 'send Authorization: token <JupyterHub API token>'),
        'GET',
        url,
      );
      return;
    }
    auth
      .resolve(token)
      .then(async (u) => {
        if (!u) throw new KmsError(401, 'unauthorized', 'the hub does not know this token');
        username = u.name;
        const { params } = api.check('GET', url, {}, undefined);
        sendJsonText(res, 200, await kms.releaseFileKey(u, params.projectId!, params.fileId!));
      })
      .catch((e: unknown) => fail(res, e, 'GET', url));
  };
}

function createApp(opts: AppOptions): {
  app: express.Express;
  api: OpenApiValidator;
  errorResponse: (err: unknown, method: string, path: string) => ErrorResponse;
} {
  const { kms, auth, logger, metrics } = opts;
  const specText = readFileSync(OPENAPI_PATH, 'utf8');
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use((req, res, next) => {
    if (opts.isDraining?.()) {
      res.set('Connection', 'close');
      res
        .status(503)
        .json({ error: { code: 'shutting_down', message: 'the KMS is shutting down' } });
      return;
    }
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const route =
        req.operation?.template ?? (req.route?.path as string | undefined) ?? 'unmatched';
      metrics.requests.observe({ method: req.method, route, status: res.statusCode }, seconds);
      if (res.statusCode >= 500) {
        logger.error(
          {
            method: req.method,
            route,
            status: res.statusCode,
            user: req.user?.name,
            ms: seconds * 1000,
          },
          'request failed',
        );
      } else if (logger.isLevelEnabled('debug')) {
        logger.debug(
          {
            method: req.method,
            route,
            status: res.statusCode,
            user: req.user?.name,
            ms: seconds * 1000,
          },
          'request',
        );
      }
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    kms.db.prepare('SELECT 1').get();
    res.json({ status: 'ok', auditHead: kms.audit.head().seq });
  });
  app.get(
    '/metrics',
    h(async (req, res) => {
      if (opts.metricsToken !== undefined) {
        const given = tokenFromHeader(req.headers.authorization) ?? '';
        if (!timingSafeEqual(digest(given), digest(opts.metricsToken))) {
          res
            .status(401)
            .json({ error: { code: 'unauthorized', message: 'metrics token required' } });
          return;
        }
      }
      const text = opts.collectMetrics
        ? await opts.collectMetrics()
        : await metrics.registry.metrics();
      res.type(metrics.registry.contentType).send(text);
    }),
  );
  app.get('/openapi.yaml', (_req, res) => {
    res.type('application/yaml').send(specText);
  });
  app.get('/v1/audit/public-key', (_req, res) => {
    res.type('text/plain').send(kms.audit.signer.publicKeyPem());
  });
  const api = new OpenApiValidator(specText);
  const consoleAuth = new ConsoleAuth({
    kms,
    auth,
    logger,
    ...(opts.oauth ? { oauth: opts.oauth } : {}),
    ...(opts.oauthClientSecret ? { clientSecret: opts.oauthClientSecret } : {}),
    ...(opts.consoleIdleMs ? { idleMs: opts.consoleIdleMs } : {}),
  });
  mountConsole(app, consoleAuth, api);

  app.use('/v1', (req: Request, _res: Response, next: NextFunction) => {
    if (req.headers.authorization === undefined) {
      // The console: a session cookie and its XSRF header instead of a token.
      consoleAuth.userFor(req).then((u) => {
        req.user = u;
        next();
      }, next);
      return;
    }
    const token = tokenFromHeader(req.headers.authorization);
    if (!token) {
      next(new KmsError(401, 'unauthorized', 'send Authorization: token <JupyterHub API token>'));
      return;
    }
    auth.resolve(token).then((u) => {
      if (!u) {
        next(new KmsError(401, 'unauthorized', 'the hub does not know this token'));
        return;
      }
      req.user = u;
      next();
    }, next);
  });

  app.use(express.json({ limit: '2mb', type: () => true }));
  const r = api.routes('/v1');
  const egress = new Egress(kms);
  r.get(
    '/me',
    h((req, res) => res.json(kms.me(user(req)))),
  );
  r.get(
    '/me/projects',
    h((req, res) => res.json(kms.myProjects(user(req)))),
  );
  r.get(
    '/me/reviews',
    h((req, res) => res.json(egress.myReviews(user(req)))),
  );
  r.post(
    '/audit/events',
    h((req, res) => res.status(201).json(kms.appendAuditEvents(user(req), req.body.events))),
  );
  r.post(
    '/projects/:projectId/audit/fs-events',
    h((req, res) =>
      res
        .status(201)
        .json(
          kms.appendFsEvents(user(req), param(req, 'projectId'), req.body.events, req.body.session),
        ),
    ),
  );
  r.post(
    '/projects/:projectId/files/confirm',
    h((req, res) =>
      res.json(kms.confirmFiles(user(req), param(req, 'projectId'), req.body.fileIds)),
    ),
  );
  r.post(
    '/projects/:projectId/files/destroy',
    h((req, res) =>
      res.json(kms.destroyFiles(user(req), param(req, 'projectId'), req.body.fileIds)),
    ),
  );
  r.post(
    '/projects/:projectId/files/:fileId/confirm',
    h((req, res) =>
      res.json(kms.confirmFiles(user(req), param(req, 'projectId'), [param(req, 'fileId')])),
    ),
  );
  r.delete(
    '/projects/:projectId/files/:fileId',
    h((req, res) =>
      res.json(kms.destroyFiles(user(req), param(req, 'projectId'), [param(req, 'fileId')])),
    ),
  );
  r.put(
    '/me',
    h((req, res) => res.json(kms.register(user(req), req.body))),
  );
  r.post(
    '/me/agreement',
    h((req, res) => res.json(kms.acceptAgreement(user(req), req.body.version))),
  );
  r.post(
    '/me/keys',
    h((req, res) => res.status(201).json(kms.addKek(user(req), req.body.publicKey))),
  );
  r.get(
    '/me/keyfile',
    h((req, res) => res.json(kms.getKeyFile(user(req)))),
  );
  r.put(
    '/me/keyfile',
    h((req, res) => res.json(kms.putKeyFile(user(req), req.body))),
  );
  r.post(
    '/me/notifications',
    h((req, res) => res.status(201).json(kms.notify(user(req), req.body.kind, req.body.message))),
  );
  r.get(
    '/me/vault',
    h((req, res) => res.json(kms.getVault(user(req)))),
  );
  r.put(
    '/me/vault',
    h((req, res) => res.json(kms.putVault(user(req), req.body))),
  );
  r.post(
    '/me/recoveries',
    h((req, res) => res.status(201).json(kms.requestRecovery(user(req), req.body))),
  );
  r.get(
    '/me/recoveries',
    h((req, res) => res.json(kms.listRecoveries(user(req)))),
  );
  r.post(
    '/admin/recoveries/:recoveryId/cancel',
    h((req, res) => res.json(kms.cancelRecovery(user(req), Number(req.params.recoveryId)))),
  );
  r.get(
    '/me/recoveries/:recoveryId',
    h((req, res) => res.json(kms.getRecovery(user(req), Number(req.params.recoveryId)))),
  );
  r.get(
    '/people/:username/keys',
    h((req, res) => res.json(kms.listKeks(user(req), param(req, 'username')))),
  );
  r.get(
    '/trustee/recoveries',
    h((req, res) => res.json(kms.trusteeRecoveries(user(req)))),
  );
  r.post(
    '/trustee/recoveries/:recoveryId/approve',
    h((req, res) =>
      res.json(kms.approveRecovery(user(req), Number(req.params.recoveryId), req.body.wrapped)),
    ),
  );
  r.get(
    '/admin/notifications',
    h((req, res) =>
      res.json(
        kms.listNotifications(
          user(req),
          Number(req.query.after ?? 0),
          Number(req.query.limit ?? 100),
        ),
      ),
    ),
  );
  r.put(
    '/admin/people/:username/trainings/:kind',
    h((req, res) =>
      res.json(
        kms.recordTraining(
          user(req),
          param(req, 'username'),
          param(req, 'kind') as never,
          req.body,
        ),
      ),
    ),
  );
  r.put(
    '/admin/people/:username/trustee',
    h((req, res) => res.json(kms.setTrustee(user(req), param(req, 'username'), req.body.trustee))),
  );
  r.get(
    '/audit/export',
    h(async (req, res) => {
      kms.authorizeAuditExport(user(req));
      res.type('application/x-ndjson');
      for (const line of exportLines(kms.db, kms.audit.signer.publicKeyPem())) {
        if (!res.write(line + '\n')) await writable(res);
      }
      res.end();
    }),
  );
  r.post(
    '/projects',
    h((req, res) => res.status(201).json(kms.propose(user(req), req.body))),
  );
  r.get(
    '/projects/:projectId',
    h((req, res) => res.json(kms.getProject(user(req), param(req, 'projectId')))),
  );
  r.post(
    '/projects/:projectId/consent',
    h((req, res) => res.json(kms.consent(user(req), param(req, 'projectId')))),
  );
  r.post(
    '/projects/:projectId/close',
    h((req, res) => res.json(kms.closeProject(user(req), param(req, 'projectId')))),
  );
  r.post(
    '/projects/:projectId/members',
    h((req, res) =>
      res.status(201).json(kms.addMember(user(req), param(req, 'projectId'), req.body)),
    ),
  );
  r.delete(
    '/projects/:projectId/members/:username',
    h((req, res) =>
      res.json(kms.removeMember(user(req), param(req, 'projectId'), param(req, 'username'))),
    ),
  );
  r.post(
    '/projects/:projectId/epochs',
    h((req, res) =>
      res.status(201).json(kms.publishEpoch(user(req), param(req, 'projectId'), req.body)),
    ),
  );
  r.get(
    '/projects/:projectId/key',
    h((req, res) => {
      const epoch = req.query.epoch === undefined ? undefined : Number(req.query.epoch);
      res.json(kms.releaseProjectKey(user(req), param(req, 'projectId'), epoch));
    }),
  );
  r.get(
    '/projects/:projectId/grants',
    h((req, res) => res.json(kms.listGrants(user(req), param(req, 'projectId')))),
  );
  r.post(
    '/projects/:projectId/grants/:grantId',
    h((req, res) =>
      res.json(
        kms.completeGrant(
          user(req),
          param(req, 'projectId'),
          Number(req.params.grantId),
          req.body.wrapped,
        ),
      ),
    ),
  );
  r.post(
    '/projects/:projectId/files',
    h((req, res) =>
      res
        .status(201)
        .json(
          kms.registerFiles(user(req), param(req, 'projectId'), req.body.files, req.body.state),
        ),
    ),
  );
  r.get(
    '/projects/:projectId/files/keys',
    h(async (req, res) => {
      const { count, chunks } = kms.streamFileKeys(user(req), param(req, 'projectId'));
      res.status(200).type('application/x-ndjson').set('X-File-Count', String(count));
      let closed = false;
      res.on('close', () => {
        closed = true;
      });
      for (const chunk of chunks) {
        if (closed) return;
        if (!res.write(chunk)) await writable(res);
      }
      res.end();
    }),
  );
  r.get(
    '/projects/:projectId/files/:fileId/key',
    h(async (req, res) =>
      sendJsonText(
        res,
        200,
        await kms.releaseFileKey(user(req), param(req, 'projectId'), param(req, 'fileId')),
      ),
    ),
  );
  r.post(
    '/projects/:projectId/files/:fileId/recipients',
    h((req, res) =>
      res
        .status(201)
        .json(kms.addRecipient(user(req), param(req, 'projectId'), param(req, 'fileId'), req.body)),
    ),
  );
  r.get(
    '/projects/:projectId/files/:fileId/review-key',
    h((req, res) =>
      res.json(kms.releaseReviewKey(user(req), param(req, 'projectId'), param(req, 'fileId'))),
    ),
  );
  egressRoutes(r, egress, h);
  app.use(api.middleware());

  const errorResponse = (err: unknown, method: string, path: string): ErrorResponse => {
    if (err instanceof KmsError) {
      return {
        status: err.status,
        body: {
          error: {
            code: err.code,
            message: err.message,
            ...(err.reason ? { reason: err.reason } : {}),
          },
        },
      };
    }
    if (err instanceof RequestValidationError) {
      return {
        status: err.status,
        body: {
          error: {
            code: codeFor(err.status),
            message: err.errors.length > 0 ? validationMessage(err) : err.message,
          },
        },
      };
    }
    if (err instanceof HubUnavailableError) {
      logger.error({ err: err.message }, 'hub unavailable');
      return {
        status: 503,
        body: { error: { code: 'hub_unavailable', message: 'cannot verify the token right now' } },
      };
    }
    const status = (err as { status?: unknown }).status;
    if ((err as { type?: unknown }).type === 'entity.parse.failed') {
      // The parser's message quotes the body, which may hold secrets.
      return {
        status: 400,
        body: { error: { code: 'invalid_json', message: 'the request body is not valid JSON' } },
      };
    }
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return {
        status,
        body: { error: { code: codeFor(status), message: validationMessage(err) } },
      };
    }
    logger.error({ err: errorSummary(err), method, path }, 'internal error');
    return { status: 500, body: { error: { code: 'internal', message: 'internal error' } } };
  };

  // Express 5 needs all four parameters to recognise an error handler.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) {
      logger.error({ err: errorSummary(err) }, 'error after the response started');
      res.destroy();
      return;
    }
    const { status, body } = errorResponse(err, req.method, req.path);
    res.status(status).json(body);
  });
  return { app, api, errorResponse };
}

interface ErrorResponse {
  status: number;
  body: { error: { code: string; message: string; reason?: string } };
}

function codeFor(status: number): string {
  return (
    {
      400: 'invalid_request',
      401: 'unauthorized',
      404: 'not_found',
      405: 'method_not_allowed',
      413: 'too_large',
      415: 'unsupported_media_type',
    }[status] ?? 'invalid_request'
  );
}

/** The validator's messages name the field and the rule; bodies are never echoed. */
function validationMessage(err: unknown): string {
  const e = err as { message?: unknown; errors?: Array<{ path?: string; message?: string }> };
  if (Array.isArray(e.errors) && e.errors.length > 0) {
    return e.errors
      .slice(0, 5)
      .map((x) => `${x.path ?? ''} ${x.message ?? ''}`.trim())
      .join('; ');
  }
  return typeof e.message === 'string' ? e.message.slice(0, 300) : 'invalid request';
}

function errorSummary(err: unknown): { name?: string; message?: string; stack?: string } {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack };
  return { message: String(err) };
}
