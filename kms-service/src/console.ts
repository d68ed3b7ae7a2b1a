/**
 * The TRE console: a web page for data owners, trustees, PIs and admins who have no lab session
 * (consent, ingress, egress review, vault approvals, the audit log with its verification).
 * Static: one HTML page, one script, one stylesheet, all from this origin under a strict CSP.
 * The page calls the same `/v1` API with a session cookie and its XSRF header; the session comes
 * from signing in through the hub's OAuth (console-auth.ts), so no token is typed or shown.
 */
import { readFileSync } from 'node:fs';
import type { Express, NextFunction, Request, Response } from 'express';
import { SignInRefused, type ConsoleAuth } from './console-auth.js';
import { tokenFromHeader } from './hub-auth.js';
import type { OpenApiValidator } from './openapi.js';

const CLIENT_DIR = new URL('../console/', import.meta.url);

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

function assets(): Record<string, { type: string; body: string }> {
  const read = (p: string) => readFileSync(new URL(p, CLIENT_DIR), 'utf8');
  return {
    '': { type: 'text/html; charset=utf-8', body: read('index.html') },
    'console.js': { type: 'text/javascript; charset=utf-8', body: read('dist/console.js') },
    'console.css': { type: 'text/css; charset=utf-8', body: read('console.css') },
  };
}

function secure(res: Response): void {
  res.set({
    'Content-Security-Policy': CSP,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'Cache-Control': 'no-store',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'X-Frame-Options': 'DENY',
  });
}

type Handler = (req: Request, res: Response) => unknown;
const h =
  (fn: Handler) =>
  (req: Request, res: Response, next: NextFunction): void => {
    Promise.resolve()
      .then(() => fn(req, res))
      .catch(next);
  };

/**
 * Mounts the console at `/console/` (files read once at start: they are part of the release),
 * its sign-out and token-session routes, and the hub's OAuth redirect at `/oauth_callback`.
 */
export function mountConsole(app: Express, auth: ConsoleAuth, api: OpenApiValidator): void {
  const files = assets();
  const send = (res: Response, name: string): void => {
    const f = files[name];
    secure(res);
    if (!f) {
      res.status(404).type('text/plain').send('not found');
      return;
    }
    res.type(f.type).send(f.body);
  };
  app.get('/console', (req, res) => {
    // Relative asset URLs need the trailing slash, under whatever prefix the proxy adds.
    if (!req.path.endsWith('/')) {
      secure(res);
      res.redirect(301, 'console/');
      return;
    }
    if (auth.oauth && !auth.hasSession(req)) {
      secure(res);
      auth.startSignIn(req, res);
      return;
    }
    send(res, '');
  });
  app.get('/console/:file', (req, res) => send(res, String(req.params.file)));
  app.post(
    '/console/session',
    h(async (req, res) => {
      api.check('POST', '/console/session', {}, undefined);
      const token = tokenFromHeader(req.headers.authorization);
      if (!token) {
        res.status(401).json({
          error: {
            code: 'unauthorized',
            message: 'send Authorization: token <JupyterHub API token>',
          },
        });
        return;
      }
      const user = await auth.fromToken(req, res, token);
      secure(res);
      res.status(201).json({ username: user.name });
    }),
  );
  app.post(
    '/console/signout',
    h((req, res) => {
      api.check('POST', '/console/signout', {}, undefined);
      auth.signOut(req, res);
      secure(res);
      res.status(204).end();
    }),
  );
  app.get(
    '/oauth_callback',
    h(async (req, res) => {
      const query = req.query as Record<string, string>;
      api.check('GET', '/oauth_callback', query, undefined);
      secure(res);
      try {
        res.redirect(302, await auth.finishSignIn(req, res, query));
      } catch (e) {
        if (!(e instanceof SignInRefused)) throw e;
        res.status(e.status).type('text/plain').send(`TRE console: ${e.message}\n`);
      }
    }),
  );
}
