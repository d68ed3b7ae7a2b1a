import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface StaticAsset {
  body: Buffer;
  contentType: string;
  /** The HTML page gets the CSP and is never cached (it may be opened with a credential). */
  isPage: boolean;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** The page's own files: desktop-proxy/public, next to src/ and dist/. */
export const PUBLIC_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'public');

function noVncRoot(): string {
  // The package exports only core/rfb.js; its directory's parent is the package root.
  const entry = createRequire(import.meta.url).resolve('@novnc/novnc');
  return dirname(dirname(entry));
}

function walk(dir: string, onFile: (path: string) => void): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path, onFile);
    else if (entry.isFile()) onFile(path);
  }
}

/**
 * Loads every file the page may request into a fixed map at start-up, so the HTTP handler only
 * looks up exact paths and no request can reach any other file.
 */
export function loadAssets(): Map<string, StaticAsset> {
  const assets = new Map<string, StaticAsset>();
  const add = (urlPath: string, file: string) => {
    const contentType = MIME[extname(file)];
    if (!contentType) return;
    assets.set(urlPath, {
      body: readFileSync(file),
      contentType,
      isPage: extname(file) === '.html',
    });
  };
  walk(PUBLIC_DIR, (file) => add(`/${relative(PUBLIC_DIR, file).split(sep).join('/')}`, file));
  const novnc = noVncRoot();
  for (const sub of ['core', 'vendor']) {
    walk(join(novnc, sub), (file) => {
      if (extname(file) === '.js') {
        add(`/novnc/${relative(novnc, file).split(sep).join('/')}`, file);
      }
    });
  }
  const index = assets.get('/index.html');
  if (!index) throw new Error(`desktop page missing: ${join(PUBLIC_DIR, 'index.html')}`);
  assets.set('/', index);
  assets.set('/vnc.html', index);
  return assets;
}

/** Headers for every response; the page additionally gets the CSP and no caching. */
export function securityHeaders(
  isPage: boolean,
  frameAncestors: readonly string[],
): Record<string, string> {
  const headers: Record<string, string> = {
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    // The desktop must never read or write the local clipboard, whatever the scripts try.
    'Permissions-Policy': 'clipboard-read=(), clipboard-write=()',
    'Cross-Origin-Resource-Policy': 'same-origin',
  };
  if (isPage) {
    headers['Content-Security-Policy'] = [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      // noVNC draws the remote cursor as a data: URL image.
      "img-src 'self' data: blob:",
      "connect-src 'self'",
      "base-uri 'none'",
      "form-action 'none'",
      `frame-ancestors ${frameAncestors.length > 0 ? frameAncestors.join(' ') : "'self'"}`,
    ].join('; ');
    headers['Cache-Control'] = 'no-store';
  } else {
    headers['Cache-Control'] = 'no-cache';
  }
  return headers;
}
