/**
 * The sidebar's one door: the server extension's routes under `{baseUrl}tre/api/`. KMS calls go
 * through `kms/v1/...`, so the user's hub token stays in the server and never reaches the page.
 */
import type {
  EgressRequest,
  EgressSummary,
  ExportFile,
  KeyStatus,
  Me,
  MyProject,
  OpenedFile,
  ServerConfig,
  Vault,
} from './types.js';

export class TreApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'TreApiError';
  }
}

/** How requests leave the page; JupyterLab's ServerConnection in the lab, a fake in unit tests. */
export type Transport = (
  path: string,
  init: { method: string; body?: string },
) => Promise<Response>;

export class TreApi {
  constructor(private readonly send: Transport) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(path, {
      method,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let data: unknown = null;
    try {
      data = text === '' ? null : JSON.parse(text);
    } catch {
      throw new TreApiError(res.status, 'bad_response', `unreadable answer (${res.status})`);
    }
    if (!res.ok) {
      const e = (data as { error?: { code?: string; message?: string; reason?: string } } | null)
        ?.error;
      throw new TreApiError(
        res.status,
        e?.code ?? 'error',
        e?.message ?? `request failed (${res.status})`,
        e?.reason,
      );
    }
    return data as T;
  }

  config(): Promise<ServerConfig> {
    return this.call('GET', 'config');
  }
  me(): Promise<Me> {
    return this.call('GET', 'kms/v1/me');
  }
  myProjects(): Promise<MyProject[]> {
    return this.call('GET', 'kms/v1/me/projects');
  }
  myReviews(): Promise<EgressSummary[]> {
    return this.call('GET', 'kms/v1/me/reviews');
  }
  vault(): Promise<Vault> {
    return this.call('GET', 'kms/v1/me/vault');
  }
  keys(): Promise<KeyStatus> {
    return this.call('GET', 'keys');
  }
  /** Forwarded to trefs's key agent, which holds the project key (`POST /grants`). */
  completeGrants(project: string): Promise<{
    completed: Array<{ id: number; username: string; epoch: number }>;
    skipped: Array<{ id: number; username: string; reason: string }>;
  }> {
    return this.call('POST', 'grants', { project });
  }
  switchProject(project: string): Promise<{ project: string; restart: boolean; next?: string }> {
    return this.call('POST', 'project', { project });
  }
  exportFiles(): Promise<{ files: ExportFile[] }> {
    return this.call('GET', 'export');
  }
  fileEgress(title: string, requestId?: number): Promise<EgressRequest> {
    return this.call('POST', 'egress', {
      title,
      ...(requestId !== undefined ? { requestId } : {}),
    });
  }
  /** Lifts the freeze of my request if the KMS says it no longer holds its files. */
  liftFreeze(requestId: number): Promise<{ requestId: number; lifted: boolean }> {
    return this.call('POST', 'egress/lift', { requestId });
  }
  /** A filed file as a reviewer sees it: checked to be the filed one, opened with my key. */
  openFiled(requestId: number, fileId: string): Promise<OpenedFile> {
    return this.call('POST', 'egress/review', { requestId, fileId });
  }
  listEgress(project: string): Promise<EgressSummary[]> {
    return this.call('GET', `kms/v1/projects/${encodeURIComponent(project)}/egress`);
  }
  egress(project: string, id: number): Promise<EgressRequest> {
    return this.call('GET', `kms/v1/projects/${encodeURIComponent(project)}/egress/${id}`);
  }
  egressAction(
    project: string,
    id: number,
    action: 'submit' | 'withdraw' | 'votes' | 'comments' | 'decision' | 'justifications',
    body?: unknown,
  ): Promise<EgressRequest> {
    return this.call(
      'POST',
      `kms/v1/projects/${encodeURIComponent(project)}/egress/${id}/${action}`,
      body,
    );
  }
}
