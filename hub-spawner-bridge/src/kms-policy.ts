/**
 * The policy as the KMS states it, asked on the user's behalf with their hub token: a project key
 * release succeeds exactly when the KMS would let the user read the project's data (agreement,
 * trainings, consent, closure, access window), so the bridge spawns exactly then. The KMS audits
 * the release like any other.
 */
import { KmsClient, KmsClientError, type MyProjectView } from '@tre/kms-service';
import { PolicyUnavailableError } from './errors.js';
import type { PolicyClient, PolicyRequest, ProjectChoice, SpawnDecision } from './policy.js';

export interface KmsPolicyOptions {
  baseUrl: string;
  fetch?: typeof fetch;
}

export class KmsPolicy implements PolicyClient {
  constructor(private readonly o: KmsPolicyOptions) {}

  private client(req: PolicyRequest): KmsClient {
    if (!req.token) {
      throw new PolicyUnavailableError(
        "the KMS needs the user's hub token, and the spawner sent none",
      );
    }
    return new KmsClient({
      baseUrl: this.o.baseUrl,
      token: req.token,
      ...(this.o.fetch ? { fetch: this.o.fetch } : {}),
    });
  }

  /** The user's projects (`GET /v1/me/projects`) with their windows and the KMS's answer now. */
  async projects(req: PolicyRequest): Promise<ProjectChoice[]> {
    let mine: MyProjectView[];
    try {
      mine = await this.client(req).myProjects();
    } catch (err) {
      throw new PolicyUnavailableError(`the KMS did not answer: ${(err as Error).message}`);
    }
    return mine
      .filter((p) => p.state !== 'closed')
      .map((p) => {
        const allowed = p.keyRelease.allowed;
        const reason = p.keyRelease.reason ?? 'refused';
        return {
          id: p.id,
          title: p.title,
          role: p.role,
          validFrom: p.window.validFrom,
          validUntil: p.window.validUntil,
          allowed,
          ...(allowed ? {} : { reason, message: refusalMessage(reason, p) }),
        };
      });
  }

  async checkSpawn(req: PolicyRequest, project: string): Promise<SpawnDecision> {
    const kms = this.client(req);
    try {
      await kms.projectKey(project);
      const view = await kms.project(project);
      const until = view.members.find((m) => m.username === req.user)?.validUntil ?? null;
      return { allow: true, windowEnd: until ? new Date(until) : null };
    } catch (err) {
      if (err instanceof KmsClientError && err.status >= 400 && err.status < 500) {
        return { allow: false, reason: err.reason ?? err.code, message: err.message };
      }
      throw new PolicyUnavailableError(`the KMS did not answer: ${(err as Error).message}`);
    }
  }

  async keyFile(req: PolicyRequest): Promise<unknown | null> {
    try {
      return await this.client(req).getKeyFile();
    } catch (err) {
      if (err instanceof KmsClientError && err.status === 404) return null;
      throw new PolicyUnavailableError(`the KMS did not answer: ${(err as Error).message}`);
    }
  }
}

/** A sentence for the spawn form; the KMS's listing gives the reason code only. */
export function refusalMessage(reason: string, p: Pick<MyProjectView, 'window'>): string {
  switch (reason) {
    case 'outside_window':
      if (p.window.validFrom && Date.parse(p.window.validFrom) > Date.now()) {
        return `access starts at ${p.window.validFrom}`;
      }
      return p.window.validUntil
        ? `access ended at ${p.window.validUntil}`
        : 'outside your access window';
    case 'training_expired':
      return 'a required training has expired';
    case 'training_missing':
      return 'a required training is not on record';
    case 'agreement_not_accepted':
    case 'agreement_outdated':
      return 'the current user agreement has not been accepted';
    case 'project_not_consented':
      return 'not every data owner has consented to the project';
    case 'project_closed':
      return 'the project is closed';
    case 'not_registered':
      return 'you have not registered with the KMS';
    case 'role_not_allowed':
      return 'your role in this project does not give access to its data';
    default:
      return `not allowed (${reason})`;
  }
}
