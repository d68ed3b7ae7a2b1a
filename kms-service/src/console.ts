/**
 * The TRE console: a web page for data owners, trustees, PIs and admins who have no lab session
 * (consent, ingress, egress review, vault approvals, the audit log with its verification).
 * Static: one HTML page, one script, one stylesheet, all from this origin under a strict CSP.
 * The page calls the same `/v1` API with the user's hub token in the Authorization header; the
 * token is typed once, kept in the tab's sessionStorage, and never put into a URL.
 */
import { readFileSync } from 'node:fs';
import type { Express, Response } from 'express';

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

/** Mounts the console at `/console/` (read once at start: the files are part of the release). */
export function mountConsole(app: Express): void {
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
    send(res, '');
  });
  app.get('/console/:file', (req, res) => send(res, String(req.params.file)));
}
