/**
 * `@tre/kms-service/client` gives other parts the typed client without the server: importing
 * it must load neither better-sqlite3 (a native module) nor express nor pino. The root export
 * still offers the client (and does load the server), so existing imports keep working.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, test } from '@jest/globals';

const PKG = fileURLToPath(new URL('..', import.meta.url));

/** Imports `specifier` in a fresh Node and lists the server-side packages it pulled in. */
function load(specifier: string): { client: string; loaded: string[] } {
  const script = `
import { createRequire } from 'node:module';
const m = await import(${JSON.stringify(specifier)});
const cache = Object.keys(createRequire(import.meta.url).cache);
const loaded = new Set();
for (const k of cache) {
  const hit = /node_modules\\/(better-sqlite3|express|pino|prom-client)\\//.exec(k);
  if (hit) loaded.add(hit[1]);
}
console.log(JSON.stringify({ client: typeof m.KmsClient, loaded: [...loaded].sort() }));
`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: PKG,
    encoding: 'utf8',
  });
  return JSON.parse(out) as { client: string; loaded: string[] };
}

test('the client subpath loads no server dependency', () => {
  expect(load('@tre/kms-service/client')).toEqual({ client: 'function', loaded: [] });
});

test('the root export still has the client, and is the one that loads the server', () => {
  const root = load('@tre/kms-service');
  expect(root.client).toBe('function');
  expect(root.loaded).toEqual(expect.arrayContaining(['better-sqlite3', 'express']));
});

test('the disclosure checker subpath is pure too', () => {
  const out = execFileSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { createRequire } from 'node:module';
const m = await import('@tre/kms-service/sdc');
const r = m.checkFile('t.csv', 'ward,n\\nA,12\\nB,3\\n');
const heavy = Object.keys(createRequire(import.meta.url).cache).filter((k) => /better-sqlite3|express/.test(k));
console.log(JSON.stringify({ verdict: r.verdict, heavy: heavy.length }));`,
    ],
    { cwd: PKG, encoding: 'utf8' },
  );
  expect(JSON.parse(out)).toEqual({ verdict: 'fail', heavy: 0 });
});
