/**
 * The policy as the KMS states it, asked on the user's behalf with their hub token: a project key
 * release succeeds exactly when the KMS would let the user read the project's data (agreement,
 * trainings, consent, closure, access window), so the bridge spawns exactly then. The KMS audits
 * the release like any other.
 */
import { KmsClient, KmsClientError } from '@tre/kms-service';
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

  /** The KMS offers no listing of a user's projects; the form then asks for a project id. */
  async projects(): Promise<ProjectChoice[]> {
    return [];
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
