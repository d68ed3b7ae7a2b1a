/**
 * The key agent's request bodies, validated against its OpenAPI document
 * (key-agent.openapi.json, compiled once with Ajv) and then for what a schema cannot say:
 * relative paths without empty, `.` or `..` components.
 */
import { readFileSync } from 'node:fs';
import AjvModule, { type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import type { WrappedKey } from '@tre/crypto';
import { AgentError } from './errors.js';

// ajv is a CommonJS module: under Node's ESM interop its class sits on `default`.
type AjvInstance = InstanceType<typeof AjvModule.default>;
const Ajv = ((AjvModule as unknown as { default?: unknown }).default ?? AjvModule) as new (
  o: Options,
) => AjvInstance;

export interface AgentBodies {
  '/': { path: string };
  '/manifest': { paths: string[] };
  '/freeze': { paths: string[]; requestId: number };
  '/freeze/lift': { requestId: number };
  '/grants': { project: string };
  '/egress/review-key':
    | { project: string; requestId: number; fileId: string }
    | { projectId: string; fileId: string; wrapped: WrappedKey };
}

export type AgentRoute = keyof AgentBodies;

interface OpenApiDoc {
  paths: Record<string, { post: { requestBody: { content: Record<string, { schema: object }> } } }>;
  components: { schemas: Record<string, object> };
}

export const AGENT_API = JSON.parse(
  readFileSync(new URL('../key-agent.openapi.json', import.meta.url), 'utf8'),
) as OpenApiDoc;

function describe(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'invalid body';
  const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : 'body';
  if (e.keyword === 'additionalProperties') {
    return `${where}: unknown field ${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)}`;
  }
  if (e.keyword === 'required') {
    return `${where}: missing field ${JSON.stringify((e.params as { missingProperty: string }).missingProperty)}`;
  }
  return `${where} ${e.message ?? 'is invalid'}`;
}

function checkRelPath(p: string, where: string): void {
  if (
    p
      .replace(/^\//, '')
      .split('/')
      .some((seg) => seg === '' || seg === '.' || seg === '..')
  ) {
    throw new AgentError(
      400,
      'invalid_path',
      `${where}: ${JSON.stringify(p)} must be relative to the mount, without empty, . or .. parts`,
    );
  }
}

export class AgentValidator {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(doc: OpenApiDoc = AGENT_API) {
    const ajv = new Ajv({ allErrors: false, strict: false });
    ajv.addSchema({ $id: 'agent', components: doc.components });
    for (const [path, item] of Object.entries(doc.paths)) {
      const schema = JSON.parse(
        JSON.stringify(item.post.requestBody.content['application/json']!.schema).replace(
          /"#\/components\//g,
          '"agent#/components/',
        ),
      ) as object;
      this.validators.set(path, ajv.compile(schema));
    }
  }

  routes(): string[] {
    return [...this.validators.keys()];
  }

  /** The body of a request to `route`, or an AgentError(400) saying what is wrong. */
  parse<R extends AgentRoute>(route: R, text: string): AgentBodies[R] {
    const validate = this.validators.get(route);
    if (!validate) throw new AgentError(404, 'no_such_operation', `no operation ${route}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new AgentError(400, 'invalid_json', 'the body must be a JSON object');
    }
    if (!validate(body)) throw new AgentError(400, 'invalid_body', describe(validate.errors));
    const b = body as Partial<AgentBodies['/freeze']>;
    if (b.paths) {
      b.paths.forEach((p, i) => checkRelPath(p, `paths.${i}`));
      if (new Set(b.paths.map((p) => p.replace(/^\//, ''))).size !== b.paths.length) {
        throw new AgentError(400, 'duplicate_path', 'a path appears twice');
      }
    }
    return body as AgentBodies[R];
  }
}
