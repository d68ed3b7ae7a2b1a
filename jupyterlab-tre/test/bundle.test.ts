/**
 * The prebuilt labextension is what every browser loads: it must carry the panels only, never
 * the TRE's server code. The sidebar's types come from kms-service by type-only imports; this
 * checks the bundle webpack made holds nothing of kms-service, its checker or its server.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from '@jest/globals';

const STATIC = new URL('../jupyterlab_tre/labextension/static', import.meta.url).pathname;

test('the labextension bundle holds no server or checker code', () => {
  if (!existsSync(STATIC)) {
    throw new Error('the labextension is not built: npm run build (with the .venv present)');
  }
  const js = readdirSync(STATIC).filter((f) => f.endsWith('.js'));
  expect(js.length).toBeGreaterThan(0);
  const text = js.map((f) => readFileSync(join(STATIC, f), 'utf8')).join('\n');
  // The panels are there...
  expect(text).toContain('tre-egress');
  // ...and nothing of the server side: module names and identifiers of the checker, the KMS
  // server and its dependencies.
  for (const marker of [
    '@tre/kms-service',
    'better-sqlite3',
    'express',
    'pino',
    'node:crypto',
    'ACRO_DEFAULTS',
    'parseDelimited',
    'checkFile',
  ]) {
    expect({ marker, found: text.includes(marker) }).toEqual({ marker, found: false });
  }
});
