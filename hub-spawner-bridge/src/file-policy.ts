/**
 * A policy from a YAML facts file, decided by the KMS's rule book (`decide` for the
 * `project_key.release` action: agreement, trainings, consent, closure, access window). For
 * installations without a KMS; the file is re-read when it changes.
 */
import { readFileSync, statSync } from 'node:fs';
import { decide, type Role, type TrainingKind } from '@tre/kms-service';
import YAML from 'yaml';
import { ConfigError } from './errors.js';
import type { PolicyClient, PolicyRequest, ProjectChoice, SpawnDecision } from './policy.js';

export interface PolicyFacts {
  agreementVersion: string;
  people: Record<
    string,
    {
      admin?: boolean;
      agreementVersion?: string | null;
      trainings?: Array<{ kind: TrainingKind; expiresAt: string }>;
      keyFile?: unknown;
    }
  >;
  projects: Record<
    string,
    {
      title?: string;
      closed?: boolean;
      consented?: boolean;
      members: Record<
        string,
        { role: Role; validFrom?: string | null; validUntil?: string | null }
      >;
    }
  >;
}

function parseFacts(text: string, source: string): PolicyFacts {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`${source}: not YAML: ${(err as Error).message}`);
  }
  const f = doc as Partial<PolicyFacts> | null;
  if (!f || typeof f !== 'object' || typeof f.agreementVersion !== 'string') {
    throw new ConfigError(`${source}: needs agreementVersion, people and projects`);
  }
  if (typeof f.people !== 'object' || typeof f.projects !== 'object') {
    throw new ConfigError(`${source}: needs agreementVersion, people and projects`);
  }
  return f as PolicyFacts;
}

export class FilePolicy implements PolicyClient {
  private facts: PolicyFacts;
  private mtime = 0;

  constructor(
    private readonly path: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.facts = this.load();
  }

  private load(): PolicyFacts {
    let text: string;
    try {
      this.mtime = statSync(this.path).mtimeMs;
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      throw new ConfigError(`policy file ${this.path}: ${(err as NodeJS.ErrnoException).code}`);
    }
    return parseFacts(text, this.path);
  }

  private current(): PolicyFacts {
    if (statSync(this.path).mtimeMs !== this.mtime) this.facts = this.load();
    return this.facts;
  }

  private decideFor(user: string, projectId: string): SpawnDecision {
    const facts = this.current();
    const person = facts.people[user];
    const project = facts.projects[projectId];
    const member = project?.members[user];
    const decision = decide(
      'project_key.release',
      {
        username: user,
        admin: person?.admin ?? false,
        ...(person
          ? {
              person: {
                agreementVersion: person.agreementVersion ?? null,
                trainings: person.trainings ?? [],
                trustee: false,
              },
            }
          : {}),
      },
      project
        ? {
            closed: project.closed ?? false,
            consented: project.consented ?? false,
            ...(member
              ? {
                  membership: {
                    role: member.role,
                    validFrom: member.validFrom ?? null,
                    validUntil: member.validUntil ?? null,
                  },
                }
              : {}),
          }
        : null,
      { now: this.now(), agreementVersion: facts.agreementVersion },
    );
    if (!decision.allow)
      return { allow: false, reason: decision.reason, message: decision.message };
    const until = member?.validUntil;
    return { allow: true, windowEnd: until ? new Date(until) : null };
  }

  async projects({ user }: PolicyRequest): Promise<ProjectChoice[]> {
    const facts = this.current();
    const out: ProjectChoice[] = [];
    for (const [id, p] of Object.entries(facts.projects)) {
      const m = p.members[user];
      if (!m) continue;
      const d = this.decideFor(user, id);
      out.push({
        id,
        title: p.title ?? id,
        role: m.role,
        validFrom: m.validFrom ?? null,
        validUntil: m.validUntil ?? null,
        allowed: d.allow,
        ...(d.allow ? {} : { reason: d.reason, message: d.message }),
      });
    }
    return out;
  }

  async checkSpawn({ user }: PolicyRequest, project: string): Promise<SpawnDecision> {
    return this.decideFor(user, project);
  }

  async keyFile({ user }: PolicyRequest): Promise<unknown | null> {
    return this.current().people[user]?.keyFile ?? null;
  }
}
