/** The non-tus calls of the ingress service (see openapi/ingress.yaml). */
import type { CipherComponent } from './cipher-names.js';
import { EXIT, TreError } from './errors.js';

export interface RequestView {
  id: string;
  project: string;
  uploader: string;
  state: 'open' | 'submitted' | 'confirming' | 'confirmed' | 'rejected';
  checklist: unknown;
  reviewer: string | null;
  reason: string | null;
  files: Array<{
    uploadId: string;
    fileId: string;
    path: string;
    size: number;
    state: string;
    digest: string | null;
  }>;
}

export interface ChecklistInput {
  pseudonymised: boolean;
  noDirectIdentifiers: boolean;
  legalBasis: string;
  dataMinimisation: boolean;
  note?: string;
}

export class IngressHttpError extends TreError {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(
      status === 401 || status === 403
        ? EXIT.auth
        : status >= 500
          ? EXIT.unavailable
          : EXIT.failure,
      message,
    );
    this.name = 'IngressHttpError';
  }
}

export class IngressClient {
  readonly base: string;

  constructor(
    base: string,
    private readonly token: string,
  ) {
    this.base = base.replace(/\/+$/, '');
  }

  get tusEndpoint(): string {
    return `${this.base}/files`;
  }

  authHeader(): string {
    return `token ${this.token}`;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          Authorization: this.authHeader(),
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (e) {
      throw new TreError(
        EXIT.unavailable,
        `ingress ${this.base} unreachable: ${(e as Error).message}`,
      );
    }
    const text = await res.text();
    if (!res.ok) {
      let err: { code?: string; message?: string } = {};
      try {
        err = (JSON.parse(text) as { error?: typeof err }).error ?? {};
      } catch {
        // not JSON: the status alone has to do
      }
      throw new IngressHttpError(
        res.status,
        err.code ?? 'http_error',
        err.message ?? `HTTP ${res.status}`,
      );
    }
    return JSON.parse(text) as T;
  }

  async registerDir(project: string, path: CipherComponent[]): Promise<Buffer[]> {
    const r = await this.call<{ dirivs: string[] }>(
      'POST',
      `/v1/projects/${encodeURIComponent(project)}/dirs`,
      { path },
    );
    return r.dirivs.map((d) => Buffer.from(d, 'base64url'));
  }

  openRequest(project: string): Promise<RequestView> {
    return this.call('POST', `/v1/projects/${encodeURIComponent(project)}/ingress-requests`);
  }

  listRequests(project: string): Promise<RequestView[]> {
    return this.call('GET', `/v1/projects/${encodeURIComponent(project)}/ingress-requests`);
  }

  request(id: string): Promise<RequestView> {
    return this.call('GET', `/v1/ingress-requests/${encodeURIComponent(id)}`);
  }

  submit(id: string, checklist: ChecklistInput): Promise<RequestView> {
    return this.call('POST', `/v1/ingress-requests/${encodeURIComponent(id)}/submit`, {
      checklist,
    });
  }

  review(id: string, decision: 'confirm' | 'reject', reason?: string): Promise<RequestView> {
    return this.call('POST', `/v1/ingress-requests/${encodeURIComponent(id)}/review`, {
      decision,
      ...(reason !== undefined ? { reason } : {}),
    });
  }

  complete(
    uploadId: string,
    digest: string,
  ): Promise<{ uploadId: string; state: string; digest: string; size: number }> {
    return this.call('POST', `/v1/uploads/${uploadId}/complete`, { digest });
  }

  /** The diriv of a directory of the project tree (a released egress request's view). */
  async egressDiriv(project: string, requestId: number, dir: string): Promise<Buffer> {
    const r = await this.call<{ diriv: string }>(
      'GET',
      `/v1/projects/${encodeURIComponent(project)}/egress/${requestId}/diriv` +
        (dir === '' ? '' : `?dir=${encodeURIComponent(dir)}`),
    );
    const iv = Buffer.from(r.diriv, 'base64url');
    if (iv.length !== 16) throw new TreError(EXIT.failure, 'the ingress sent a malformed diriv');
    return iv;
  }

  /** The ciphertext of one released egress file, as a stream of its body. */
  async egressFile(
    project: string,
    requestId: number,
    fileId: string,
    cipherPath: string,
    signal?: AbortSignal,
  ): Promise<Response> {
    const url =
      `${this.base}/v1/projects/${encodeURIComponent(project)}/egress/${requestId}` +
      `/files/${fileId}?path=${encodeURIComponent(cipherPath)}`;
    let res: Response;
    try {
      res = await fetch(url, {
        headers: { Authorization: this.authHeader() },
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      if (signal?.aborted) throw new TreError(EXIT.interrupted, 'interrupted');
      throw new TreError(
        EXIT.unavailable,
        `ingress ${this.base} unreachable: ${(e as Error).message}`,
      );
    }
    if (!res.ok) {
      let err: { code?: string; message?: string } = {};
      try {
        err = ((await res.json()) as { error?: typeof err }).error ?? {};
      } catch {
        // not JSON: the status alone has to do
      }
      throw new IngressHttpError(
        res.status,
        err.code ?? 'http_error',
        err.message ?? `HTTP ${res.status}`,
      );
    }
    return res;
  }

  /** Discards an unfinished upload (tus termination). */
  async terminate(uploadId: string): Promise<void> {
    const res = await fetch(`${this.tusEndpoint}/${uploadId}`, {
      method: 'DELETE',
      headers: { Authorization: this.authHeader(), 'Tus-Resumable': '1.0.0' },
    });
    await res.arrayBuffer();
  }
}
