/** The bridge's HTTP API (openapi.yaml), validated requests and responses. */
import { createHash, timingSafeEqual } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import type { Logger } from 'pino';
import { BridgeError, UnauthorizedError } from './errors.js';
import type { BridgeMetrics } from './metrics.js';
import { PickupError } from './pickup.js';
import { PICKUP_MEDIA_TYPE, encodePickup } from './pickup-wire.js';
import type { BridgeService, StartRequest } from './service.js';

export const OPENAPI_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', 'openapi.yaml');

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

function bearer(req: Request): string | undefined {
  return /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
}

export interface AppOptions {
  service: BridgeService;
  /** The shared token the spawner shim presents. */
  apiToken: string;
  logger: Logger;
  metrics: BridgeMetrics;
}

export function createApp(o: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  const expected = digest(o.apiToken);

  app.get('/metrics', async (_req, res) => {
    res.type(o.metrics.registry.contentType).send(await o.metrics.registry.metrics());
  });

  app.use(express.json({ limit: '256kb' }));
  app.use(
    OpenApiValidator.middleware({
      apiSpec: OPENAPI_PATH,
      validateRequests: { allowUnknownQueryParameters: false },
      validateResponses: true,
      validateSecurity: {
        handlers: {
          apiToken: async (req) => {
            const given = bearer(req as Request);
            // Compare digests so neither the length nor the content leaks through timing.
            if (!given || !timingSafeEqual(digest(given), expected)) throw new UnauthorizedError();
            return true;
          },
          // The per-job secret is checked by the service against the session's record.
          agentSecret: async (req) => {
            if (!bearer(req as Request)) throw new UnauthorizedError();
            return true;
          },
        },
      },
    }),
  );

  const api = express.Router();
  const s = o.service;

  api.get('/health', (_req, res) => {
    res.json({ ok: true, executor: s.executorName });
  });

  api.get('/users/:user/options', async (req, res) => {
    const token = req.header('x-tre-user-token');
    res.json(await s.options({ user: req.params.user as string, ...(token ? { token } : {}) }));
  });

  api.post('/sessions', async (req, res) => {
    res.status(201).json(await s.startSession(req.body as StartRequest));
  });

  api.get('/sessions/:id', (req, res) => {
    res.json(s.view(s.get(req.params.id as string)));
  });

  api.delete('/sessions/:id', async (req, res) => {
    res.json(await s.stopSession(req.params.id as string));
  });

  api.get('/sessions/:id/events', async (req, res) => {
    const id = req.params.id as string;
    const after = Number(req.query.after ?? 0);
    const wait = Number(req.query.wait ?? 0);
    const events = await s.waitForEvents(id, after, wait * 1000);
    res.json({ state: s.get(id).state, events });
  });

  api.post('/pickup', (req, res) => {
    const { session, job, token } = req.body as { session: string; job: string; token: string };
    let secrets;
    try {
      secrets = s.collect(session, job, token);
    } catch (err) {
      if (err instanceof PickupError) {
        o.metrics.pickups.labels(err.reason).inc();
        o.logger.warn(
          { event: 'pickup-refused', session, job, reason: err.reason },
          'pickup refused',
        );
        // Not bound yet: sbatch has not answered the bridge, the agent should ask again.
        const status = err.reason === 'not-ready' ? 409 : 403;
        res.status(status).json({ error: { code: `pickup_${err.reason}`, message: err.message } });
        return;
      }
      throw err;
    }
    o.metrics.pickups.labels('collected').inc();
    const body = encodePickup(secrets.config, secrets.kek ?? null);
    secrets.kek?.fill(0);
    res.status(200);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Type', PICKUP_MEDIA_TYPE);
    res.setHeader('Content-Length', body.length);
    res.end(body, () => body.fill(0));
  });

  api.post('/sessions/:id/agent', (req, res) => {
    const id = req.params.id as string;
    const secret = bearer(req) as string;
    const body = req.body as { host?: string; port?: number; error?: string };
    if (body.error !== undefined) s.agentFailed(id, secret, body.error);
    else s.agentReady(id, secret, body.host as string, body.port as number);
    res.status(204).end();
  });

  app.use('/api/v1', api);

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof BridgeError) {
      const reason = (err as { reason?: string }).reason;
      res.status(err.status).json({
        error: { code: err.code, message: err.message, ...(reason ? { reason } : {}) },
      });
      return;
    }
    const status = (err as { status?: number }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).json({
        error: { code: 'invalid_request', message: (err as Error).message },
      });
      return;
    }
    o.logger.error({ err: String(err), path: req.path }, 'request failed');
    res.status(500).json({ error: { code: 'internal', message: 'internal error' } });
  });

  return app;
}
