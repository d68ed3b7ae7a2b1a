/**
 * The ingress's OpenAPI description is itself valid OpenAPI (the server skips this check at
 * start, where it cost seconds of CPU).
 */
import { describe, expect, it } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import { parse } from 'yaml';
import { OpenApiSpecLoader } from 'express-openapi-validator/dist/framework/openapi.spec.loader.js';
import type { OpenAPIV3 } from 'express-openapi-validator/dist/framework/types.js';
import { OPENAPI_PATH } from '../src/ingress/server.js';

describe('openapi/ingress.yaml', () => {
  it('passes the OpenAPI schema check', async () => {
    const doc = parse(await readFile(OPENAPI_PATH, 'utf8')) as OpenAPIV3.DocumentV3;
    const spec = await new OpenApiSpecLoader({ apiDoc: doc, validateApiSpec: true }).load();
    expect(spec.routes.map((r) => r.openApiRoute)).toContain('/v1/uploads/{id}/complete');
  });

  it('a broken description fails that check', async () => {
    const doc = parse(await readFile(OPENAPI_PATH, 'utf8')) as OpenAPIV3.DocumentV3;
    (doc.paths as Record<string, unknown>)['/broken'] = { get: { responses: 'not an object' } };
    await expect(
      new OpenApiSpecLoader({ apiDoc: doc, validateApiSpec: true }).load(),
    ).rejects.toThrow();
  });
});
