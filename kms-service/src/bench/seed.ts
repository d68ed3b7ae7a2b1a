import { randomBytes } from 'node:crypto';
import { encodePublicKey, fingerprint } from '@tre/crypto';
import { migrate, openDatabase } from '../db.js';
import { FileStore } from '../store/files.js';
import { KeyStore } from '../store/keys.js';
import { PeopleStore } from '../store/people.js';
import { ProjectStore } from '../store/projects.js';

export interface SeedOptions {
  project: string;
  pi: string;
  dataOwner: string;
  organisation: string;
  files: number;
  fileSize: number;
}

/** Stand-in wrapped records: the KMS stores them opaquely and never opens one. */
const fakeWrapped = (kid: string): string =>
  JSON.stringify({
    v: 1,
    kid,
    kem: 'x25519',
    enc: randomBytes(32).toString('base64url'),
    ct: randomBytes(48).toString('base64url'),
  });

/**
 * Writes a consented project straight into the database: its PI and data owner trained and
 * agreed, epoch 1 under a stand-in project key, and `files` visible files. Benchmarks and crash
 * tests need this volume of state in seconds, which the HTTP API (rightly) does not allow.
 * Returns the first file's id.
 */
export function seedConsentedProject(dbPath: string, o: SeedOptions): string {
  const db = openDatabase(dbPath);
  migrate(db);
  const now = new Date().toISOString();
  const later = new Date(Date.now() + 365 * 86400e3).toISOString();
  const people = new PeopleStore(db);
  const projects = new ProjectStore(db);
  const keys = new KeyStore(db);
  const files = new FileStore(db);
  const publicKey = randomBytes(32);
  const kid = fingerprint('x25519', publicKey);
  let firstFile = '';
  db.transaction(() => {
    for (const u of [o.pi, o.dataOwner]) {
      people.upsert(u, o.organisation, null, now);
      people.acceptAgreement(u, '1', now);
      for (const kind of ['hpc', 'data_awareness', 'tre_rules'] as const) {
        people.recordTraining(u, kind, now, later, 'seed');
      }
    }
    projects.create(o.project, o.project, '', o.pi, now);
    for (const [u, role] of [
      [o.pi, 'pi'],
      [o.dataOwner, 'data_owner'],
    ] as const) {
      projects.addMember({
        project_id: o.project,
        username: u,
        role,
        valid_from: null,
        valid_until: later,
        added_by: o.pi,
        added_at: now,
      });
    }
    projects.consent(o.project, o.dataOwner, now);
    keys.addEpoch({
      project_id: o.project,
      epoch: 1,
      kem: 'x25519',
      kid,
      public_key: encodePublicKey({ kem: 'x25519', kid, publicKey }),
      volume_wrapped: fakeWrapped(kid),
      previous_wrapped: null,
      created_by: o.pi,
      created_at: now,
    });
    projects.setEpoch(o.project, 1);
    for (let i = 0; i < o.files; i++) {
      const id = randomBytes(16).toString('hex');
      if (i === 0) firstFile = id;
      files.insert(
        {
          file_id: id,
          epoch: 1,
          size: o.fileSize,
          sha256: randomBytes(32).toString('hex'),
          wrapped: fakeWrapped(kid),
        },
        o.project,
        o.dataOwner,
        now,
      );
    }
  })();
  db.close();
  return firstFile;
}
