/**
 * Behind the hub's proxy a service is reached under its prefix (/services/kms/...), which the
 * proxy does not strip; direct callers use the root. Both reach the same routes. The console
 * needs the path the browser used (cookie paths, redirects), so the stripped prefix is kept.
 */
import type { IncomingMessage, RequestListener } from 'node:http';

const bases = new WeakMap<IncomingMessage, string>();

/** The path under which the browser reached this request's routes: `/` or the proxy prefix. */
export function publicBase(req: IncomingMessage): string {
  return bases.get(req) ?? '/';
}

export function withPrefix(prefix: string, handler: RequestListener): RequestListener {
  const bare = prefix.replace(/\/+$/, '');
  return (req, res) => {
    const url = req.url ?? '/';
    if (url === bare || url.startsWith(`${bare}/`) || url.startsWith(`${bare}?`)) {
      const rest = url.slice(bare.length);
      req.url = rest.startsWith('/') ? rest : `/${rest}`;
      bases.set(req, `${bare}/`);
    }
    handler(req, res);
  };
}
