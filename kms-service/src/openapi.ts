/**
 * Request validation and routing against openapi.yaml, compiled once at start-up: per operation
 * one path regular expression and Ajv-compiled validators for its path and query parameters and
 * its JSON body. A request is matched by method and number of path segments, validated, and
 * handed to the handler registered for its operation, so the per-request cost is a few
 * regular-expression tests and the compiled validators: no route compilation per request and
 * no second walk through a router's layers. A handler can only be registered for an operation
 * the spec documents, so every route is validated.
 */
import { readFileSync } from 'node:fs';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import AjvModule, { type ErrorObject, type Options, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import YAML from 'yaml';

// ajv and ajv-formats are CommonJS modules: under Node's ESM interop their classes sit on `default`.
type AjvInstance = InstanceType<typeof AjvModule.default>;
const Ajv = ((AjvModule as unknown as { default?: unknown }).default ?? AjvModule) as new (
  o: Options,
) => AjvInstance;
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ??
  addFormatsModule) as unknown as (a: AjvInstance) => void;

type Schema = Record<string, unknown>;

interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header' | 'cookie';
  required?: boolean;
  schema: Schema;
}

export interface CompiledOperation {
  method: string;
  template: string;
  operationId: string;
  regex: RegExp;
  names: string[];
  literalRank: number[];
  path?: Validator;
  query?: Validator;
  queryNames: Set<string>;
  body?: Validator;
  bodyRequired: boolean;
  handler?: RequestHandler;
}

/** What routes are registered on: express's verbs, with express-style paths (`/a/:id`). */
export interface RouteTable {
  get(path: string, handler: RequestHandler): void;
  post(path: string, handler: RequestHandler): void;
  put(path: string, handler: RequestHandler): void;
  delete(path: string, handler: RequestHandler): void;
}

declare module 'express-serve-static-core' {
  interface Request {
    /** The documented operation the request was matched to. */
    operation?: CompiledOperation;
  }
}

/**
 * A schema compiled on first use: Ajv's code generation for every operation at start-up takes
 * seconds of CPU on a busy node, and most processes (tests, CLI) touch few operations.
 */
class Validator {
  private fn?: ValidateFunction;
  constructor(
    private readonly ajv: AjvInstance,
    private readonly schema: Schema,
  ) {}
  get errors(): ErrorObject[] | null | undefined {
    return this.fn?.errors;
  }
  check(data: unknown): boolean {
    this.fn ??= this.ajv.compile(this.schema);
    return this.fn(data) as boolean;
  }
}

export interface ValidationIssue {
  path: string;
  message: string;
}

/** A request the spec does not allow: status 400, 404 or 405, with what was wrong. */
export class RequestValidationError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: ValidationIssue[] = [],
  ) {
    super(message);
    this.name = 'RequestValidationError';
  }
}

interface Spec {
  paths: Record<string, Record<string, unknown>>;
  components?: Record<string, unknown>;
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;
const SPEC_ID = 'openapi';

/** Points every local `#/components/...` reference at the spec document registered in Ajv. */
function retarget(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(retarget);
  if (typeof s !== 'object' || s === null) return s;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    out[k] =
      k === '$ref' && typeof v === 'string' && v.startsWith('#/') ? SPEC_ID + v : retarget(v);
  }
  return out;
}

function segmentsOf(path: string): number {
  let n = 0;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++;
  return n;
}

function issues(errors: ErrorObject[] | null | undefined, where: string): ValidationIssue[] {
  return (errors ?? []).map((e) => ({
    path: `${where}${e.instancePath}`,
    message:
      e.keyword === 'additionalProperties'
        ? `must NOT have additional property '${String((e.params as { additionalProperty?: unknown }).additionalProperty)}'`
        : (e.message ?? 'is invalid'),
  }));
}

export class OpenApiValidator {
  private readonly buckets = new Map<string, CompiledOperation[]>();
  private readonly byPathSegments = new Map<number, CompiledOperation[]>();

  constructor(specText: string) {
    const spec = YAML.parse(specText) as Spec;
    const ajv = new Ajv({ strict: false, allErrors: false, coerceTypes: false });
    const coercing = new Ajv({ strict: false, allErrors: false, coerceTypes: true });
    for (const a of [ajv, coercing]) {
      addFormats(a);
      a.addSchema({ $id: SPEC_ID, components: spec.components ?? {} });
    }
    const deref = <T>(x: unknown): T => {
      let cur = x as Schema;
      while (typeof cur.$ref === 'string') {
        const parts = (cur.$ref as string).slice(2).split('/');
        cur = parts.reduce<Schema>((o, p) => o[p] as Schema, spec as unknown as Schema);
      }
      return cur as T;
    };
    for (const [template, item] of Object.entries(spec.paths)) {
      const shared = ((item.parameters ?? []) as unknown[]).map((p) => deref<Parameter>(p));
      for (const method of METHODS) {
        const op = item[method] as Schema | undefined;
        if (!op) continue;
        const params = [
          ...shared,
          ...((op.parameters ?? []) as unknown[]).map((p) => deref<Parameter>(p)),
        ];
        const names: string[] = [];
        const literalRank: number[] = [];
        const source = template
          .split('/')
          .map((seg) => {
            const m = /^\{(\w+)\}$/.exec(seg);
            if (m) {
              names.push(m[1]!);
              literalRank.push(1);
              return '([^/]+)';
            }
            literalRank.push(0);
            return seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
          })
          .join('/');
        const objectOf = (where: Parameter['in']): Schema | undefined => {
          const ps = params.filter((p) => p.in === where);
          if (ps.length === 0) return undefined;
          return {
            type: 'object',
            additionalProperties: where !== 'query',
            required: ps.filter((p) => p.required || where === 'path').map((p) => p.name),
            properties: Object.fromEntries(ps.map((p) => [p.name, retarget(p.schema)])),
          };
        };
        const pathSchema = objectOf('path');
        const querySchema = objectOf('query');
        const rb = op.requestBody ? deref<Schema>(op.requestBody) : undefined;
        const bodySchema = (rb?.content as Record<string, { schema?: unknown }> | undefined)?.[
          'application/json'
        ]?.schema;
        const compiled: CompiledOperation = {
          method: method.toUpperCase(),
          template,
          operationId: String(op.operationId ?? `${method} ${template}`),
          regex: new RegExp(`^${source}$`),
          names,
          literalRank,
          queryNames: new Set(params.filter((p) => p.in === 'query').map((p) => p.name)),
          bodyRequired: rb?.required === true,
          ...(pathSchema ? { path: new Validator(coercing, pathSchema) } : {}),
          ...(querySchema ? { query: new Validator(coercing, querySchema) } : {}),
          ...(bodySchema ? { body: new Validator(ajv, retarget(bodySchema) as Schema) } : {}),
        };
        const segs = segmentsOf(template);
        const key = `${compiled.method} ${segs}`;
        if (!this.buckets.has(key)) this.buckets.set(key, []);
        this.buckets.get(key)!.push(compiled);
        if (!this.byPathSegments.has(segs)) this.byPathSegments.set(segs, []);
        this.byPathSegments.get(segs)!.push(compiled);
      }
    }
    // Literal segments win over templated ones (/files/keys before /files/{fileId}).
    const rank = (a: CompiledOperation, b: CompiledOperation): number => {
      for (let i = 0; i < a.literalRank.length; i++) {
        const d = a.literalRank[i]! - b.literalRank[i]!;
        if (d !== 0) return d;
      }
      return 0;
    };
    for (const list of [...this.buckets.values(), ...this.byPathSegments.values()]) list.sort(rank);
  }

  /**
   * Routes registered here run for their operation once it is validated. `base` is prefixed
   * to each path; a path or method the spec does not document is refused at start-up.
   */
  routes(base: string): RouteTable {
    const add =
      (method: string) =>
      (path: string, handler: RequestHandler): void => {
        const template = base + path.replace(/:(\w+)/g, '{$1}');
        const op = this.buckets
          .get(`${method} ${segmentsOf(template)}`)
          ?.find((o) => o.template === template);
        if (!op) throw new Error(`${method} ${template} is not in the OpenAPI document`);
        if (op.handler) throw new Error(`${method} ${template} is routed twice`);
        op.handler = handler;
      };
    return { get: add('GET'), post: add('POST'), put: add('PUT'), delete: add('DELETE') };
  }

  /** The operation a request is for, or a 404 / 405 error. */
  match(method: string, path: string): { op: CompiledOperation; params: string[] } {
    const segs = segmentsOf(path);
    const list = this.buckets.get(`${method} ${segs}`);
    if (list) {
      for (const op of list) {
        const m = op.regex.exec(path);
        if (m) return { op, params: m.slice(1) };
      }
    }
    const other = this.byPathSegments.get(segs)?.find((op) => op.regex.test(path));
    if (other)
      throw new RequestValidationError(405, `${method} is not allowed on ${other.template}`);
    throw new RequestValidationError(404, `no endpoint ${path}`);
  }

  /** Validates one request and sets `req.params`; throws {@link RequestValidationError}. */
  validate(req: Request): CompiledOperation {
    const { op, params } = this.check(
      req.method,
      req.path,
      req.query as Record<string, unknown>,
      req.body,
    );
    req.params = params;
    return op;
  }

  /**
   * The checks of {@link validate} on a request's parts (path without the query string, parsed
   * query, parsed body or undefined), for a caller that does not go through express.
   */
  check(
    method: string,
    path: string,
    query: Record<string, unknown>,
    body: unknown,
  ): { op: CompiledOperation; params: Record<string, string> } {
    const { op, params } = this.match(method, path);
    const values: Record<string, string> = {};
    for (let i = 0; i < op.names.length; i++) {
      try {
        values[op.names[i]!] = decodeURIComponent(params[i]!);
      } catch {
        throw new RequestValidationError(400, `path parameter ${op.names[i]!} is not valid`);
      }
    }
    if (op.path) {
      // Validate a copy: coercion must not change what the route reads.
      if (!op.path.check({ ...values })) {
        const errs = issues(op.path.errors, '/path');
        throw new RequestValidationError(400, errs[0]!.message, errs);
      }
    }
    for (const k in query) {
      if (!op.queryNames.has(k)) {
        throw new RequestValidationError(400, `unknown query parameter '${k}'`, [
          { path: `/query/${k}`, message: 'is not a parameter of this operation' },
        ]);
      }
    }
    if (op.query) {
      // Validate a copy: coercion must not change what the route reads.
      const q = { ...query };
      if (!op.query.check(q)) {
        const errs = issues(op.query.errors, '/query');
        throw new RequestValidationError(400, errs[0]!.message, errs);
      }
    }
    if (op.body) {
      if (body === undefined) {
        if (op.bodyRequired) {
          throw new RequestValidationError(400, 'request body is required', [
            { path: '/body', message: 'is required' },
          ]);
        }
      } else if (!op.body.check(body)) {
        const errs = issues(op.body.errors, '/body');
        throw new RequestValidationError(400, errs[0]!.message, errs);
      }
    }
    return { op, params: values };
  }

  /**
   * Express middleware: validates, then runs the operation's handler (or next() if none is
   * registered here); an invalid request goes to next(error).
   */
  middleware(): (req: Request, res: Response, next: NextFunction) => void {
    return (req, res, next) => {
      let op: CompiledOperation;
      try {
        op = this.validate(req);
      } catch (e) {
        next(e);
        return;
      }
      req.operation = op;
      if (op.handler) void op.handler(req, res, next);
      else next();
    };
  }
}

export function loadValidator(specPath: string): OpenApiValidator {
  return new OpenApiValidator(readFileSync(specPath, 'utf8'));
}
