/**
 * What the key agent's egress and grant operations need from the KMS, acting as the session's
 * member (the hub token handed over with the KEK). Only wrapped keys and public keys cross.
 */
import { KmsClient, KmsClientError } from '@tre/kms-service/client';
import { decodePublicKey, type PublicKey, type WrappedKey } from '@tre/crypto';
import { AgentError } from './errors.js';

export interface EgressRequestFacts {
  requester: string;
  state: string;
  /** The requester and every reviewer: the people each filed DEK is wrapped to. */
  recipients: string[];
}

export interface PendingGrant {
  id: number;
  username: string;
  epoch: number;
  kek: PublicKey | null;
}

export interface ReviewWrap {
  fileId: string;
  path: string;
  size: number;
  sha256: string;
  wrapped: WrappedKey;
}

export interface EgressKms {
  me(): Promise<string>;
  request(projectId: string, requestId: number): Promise<EgressRequestFacts>;
  currentKek(username: string): Promise<PublicKey>;
  grants(projectId: string): Promise<PendingGrant[]>;
  completeGrant(projectId: string, grantId: number, wrapped: WrappedKey): Promise<void>;
  reviewKey(projectId: string, requestId: number, fileId: string): Promise<ReviewWrap>;
}

/** A KMS refusal keeps its status and reason; anything else is the KMS being unreachable. */
function agentError(err: unknown, what: string): AgentError {
  if (err instanceof KmsClientError) {
    const status = [400, 403, 404, 409, 410].includes(err.status) ? err.status : 502;
    return new AgentError(status, err.reason ?? err.code, `${what}: ${err.message}`);
  }
  return new AgentError(502, 'kms_unreachable', `${what}: ${(err as Error).message}`);
}

export class KmsEgress implements EgressKms {
  private username: string | undefined;

  constructor(private readonly client: KmsClient) {}

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw agentError(err, what);
    }
  }

  async me(): Promise<string> {
    this.username ??= await this.call('who am I', async () => (await this.client.me()).username);
    return this.username;
  }

  request(projectId: string, requestId: number): Promise<EgressRequestFacts> {
    return this.call(`egress request ${requestId}`, async () => {
      const v = await this.client.egress(projectId, requestId);
      return {
        requester: v.requester,
        state: v.state,
        recipients: [v.requester, ...v.reviewers.map((r) => r.username)],
      };
    });
  }

  currentKek(username: string): Promise<PublicKey> {
    return this.call(`${username}'s key`, async () => {
      const k = (await this.client.listKeks(username)).find((x) => x.current);
      if (!k) {
        throw new AgentError(409, 'no_key', `${username} has no key yet: they must set one up`);
      }
      return decodePublicKey(k.publicKey);
    });
  }

  grants(projectId: string): Promise<PendingGrant[]> {
    return this.call('pending grants', async () =>
      (await this.client.grants(projectId)).map((g) => ({
        id: g.id,
        username: g.username,
        epoch: g.epoch,
        kek: g.kek ? decodePublicKey(g.kek.publicKey) : null,
      })),
    );
  }

  completeGrant(projectId: string, grantId: number, wrapped: WrappedKey): Promise<void> {
    return this.call(`grant ${grantId}`, async () => {
      await this.client.completeGrant(projectId, grantId, wrapped);
    });
  }

  reviewKey(projectId: string, requestId: number, fileId: string): Promise<ReviewWrap> {
    return this.call(`the review key of ${fileId}`, () =>
      this.client.egressReviewKey(projectId, requestId, fileId),
    );
  }
}
