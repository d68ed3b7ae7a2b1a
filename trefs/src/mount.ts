/**
 * One trefs mount from start to end. Everything that can fail for a reason the user must know
 * (unreadable key, wrong key, KMS unreachable, not a member, bad cipher directory) is checked
 * before the FUSE mount, so a failed start leaves nothing mounted.
 */
import { randomBytes } from 'node:crypto';
import { lstat, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import {
  CONF_NAME,
  CryptoError,
  DIRIV_LEN,
  DIRIV_NAME,
  NameTransform,
  cipherNameKind,
  readLongNameFile,
  type KeyPair,
  TEMP_NAME,
} from '@tre/crypto';
import { AgentOps } from './agent-ops.js';
import { AuditLog, type AuditOptions } from './audit.js';
import { CallerResolver } from './caller.js';
import {
  CipherDirError,
  KmsUnreachableError,
  MountError,
  NotMemberError,
  TrefsError,
  WrongKeyError,
} from './errors.js';
import { TrefsFs } from './filesystem.js';
import { FREEZE_DIR, FreezeStore, freezeMacKey } from './freeze.js';
import { buildOps, createFuse, mountFuse, unmountFuse, Fuse } from './fuse-ops.js';
import { KeyAgent } from './key-agent.js';
import type { KeyService } from './key-source.js';
import { KeyRing } from './keyring.js';
import { MembershipWatch } from './membership-watch.js';
import { NameMap } from './name-map.js';

export interface MountOptions {
  cipherDir: string;
  mountpoint: string;
  service: KeyService;
  /** The member's KEK; wiped on unmount and on revocation. */
  kek: KeyPair;
  readOnly?: boolean;
  log: Logger;
  /** Membership poll interval (default 1000 ms). */
  pollMs?: number;
  audit?: AuditOptions;
  /** Unix socket path for the key agent; no agent when absent. */
  keyAgentSocket?: string;
  /** Skip the FUSE mount (the filesystem object alone, for tests of the logic). */
  noFuse?: boolean;
}

export interface Mounted {
  readonly fs: TrefsFs;
  readonly keys: KeyRing;
  readonly audit: AuditLog;
  /** Resolves with the reason when the membership ends and the keys are wiped. */
  readonly revoked: Promise<string>;
  unmount(): Promise<void>;
}

const DIRIV_MODE = 0o444;

/** Wraps a key-service failure that is not already a typed trefs error. */
function serviceError(err: unknown, what: string): Error {
  if (err instanceof TrefsError) return err;
  return new KmsUnreachableError(`${what}: ${(err as Error).message}`);
}

/** Checks the cipher directory; true when it is empty and becomes a new volume. */
async function checkCipherDir(dir: string, readOnly: boolean): Promise<boolean> {
  let st;
  try {
    st = await lstat(dir);
  } catch {
    throw new CipherDirError(`cipher directory ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new CipherDirError(`${dir} is not a directory`);
  try {
    await lstat(join(dir, DIRIV_NAME));
    return false;
  } catch {
    // No root diriv: only an empty directory may become a new volume.
  }
  const entries = (await readdir(dir)).filter((e) => e !== CONF_NAME);
  if (entries.length > 0) {
    throw new CipherDirError(
      `${dir} has no ${DIRIV_NAME}: not a gocryptfs-layout cipher directory`,
    );
  }
  if (readOnly) throw new CipherDirError(`${dir} is empty and the mount is read-only`);
  return true;
}

/** gocryptfs stores no key check value; the first decryptable root entry is the check. */
async function checkVolumeKey(dir: string, names: NameTransform, iv: Buffer): Promise<void> {
  for (const entry of await readdir(dir)) {
    if (
      entry === DIRIV_NAME ||
      entry === CONF_NAME ||
      entry === FREEZE_DIR ||
      TEMP_NAME.test(entry)
    ) {
      continue;
    }
    const kind = cipherNameKind(entry);
    if (kind === 'longname-file') continue;
    try {
      const cName = kind === 'longname' ? await readLongNameFile(dir, entry) : entry;
      names.decryptName(cName, iv);
    } catch (err) {
      if (err instanceof CryptoError) {
        throw new WrongKeyError(
          `the project's volume key does not decrypt the names in ${dir}: wrong project or damaged directory`,
        );
      }
      throw err;
    }
    return;
  }
}

export async function mountTrefs(opts: MountOptions): Promise<Mounted> {
  const cipherDir = resolve(opts.cipherDir);
  const readOnly = opts.readOnly ?? false;
  const log = opts.log;
  const newVolume = await checkCipherDir(cipherDir, readOnly);
  let status;
  try {
    status = await opts.service.membershipStatus();
  } catch (err) {
    throw serviceError(err, 'cannot reach the key service');
  }
  if (!status.active) {
    throw new NotMemberError(`not an active member of this project: ${status.reason ?? 'ended'}`);
  }
  if (status.validUntil && status.validUntil.getTime() <= Date.now()) {
    throw new NotMemberError(`the access window ended at ${status.validUntil.toISOString()}`);
  }
  let keys: KeyRing;
  try {
    keys = await KeyRing.open(opts.service, opts.kek);
  } catch (err) {
    opts.kek.privateKey.fill(0);
    throw serviceError(err, 'cannot load the project keys');
  }
  const nameMap = new NameMap(cipherDir, new NameTransform(keys.volumeKey()));
  try {
    // Only a member whose KEK opened the project key starts a new volume.
    if (newVolume) {
      await writeFile(join(cipherDir, DIRIV_NAME), randomBytes(DIRIV_LEN), {
        mode: DIRIV_MODE,
        flag: 'wx',
      });
    }
    const iv = (await nameMap.dirInfo('/')).iv;
    await checkVolumeKey(cipherDir, new NameTransform(keys.volumeKey()), iv);
  } catch (err) {
    keys.wipe();
    if (err instanceof TrefsError) throw err;
    throw new CipherDirError(`cannot read ${cipherDir}: ${(err as Error).message}`);
  }
  const audit = new AuditLog(opts.service, new CallerResolver(), log, opts.audit);
  const freeze = new FreezeStore(
    cipherDir,
    keys.projectId,
    freezeMacKey(keys.volumeKey(), keys.projectId),
    (message) => log.warn(message),
  );
  freeze.refresh();
  const fs = new TrefsFs(nameMap, keys, {
    readOnly,
    freeze,
    audit: (r) => audit.record(r),
    warn: (message) => log.warn(message),
  });

  const ops = new AgentOps({
    fs,
    keys,
    freeze,
    projectId: keys.projectId,
    readOnly,
    ...(opts.service.egress ? { kms: opts.service.egress } : {}),
    log: (msg, fields) => log.info(fields, msg),
  });
  const agent = opts.keyAgentSocket ? new KeyAgent(fs, opts.keyAgentSocket, log, ops) : undefined;
  let fuse: ReturnType<typeof createFuse> | undefined;
  if (!opts.noFuse) {
    fuse = createFuse(resolve(opts.mountpoint), buildOps(fs, log), { readOnly });
    try {
      await mountFuse(fuse);
    } catch (err) {
      keys.wipe();
      throw new MountError(`cannot mount on ${opts.mountpoint}: ${(err as Error).message}`);
    }
  }
  try {
    await agent?.start();
  } catch (err) {
    if (fuse) await unmountFuse(fuse).catch(() => undefined);
    keys.wipe();
    throw new MountError(`cannot start the key agent: ${(err as Error).message}`);
  }
  audit.start();
  if (!readOnly) keys.warmUp();

  let onRevoke: (reason: string) => void = () => undefined;
  const revoked = new Promise<string>((res) => {
    onRevoke = res;
  });
  const watch = new MembershipWatch(
    opts.service,
    opts.pollMs ?? 1000,
    (reason) => {
      keys.wipe();
      freeze.wipe();
      log.warn({ reason }, 'membership ended: keys wiped, new opens are refused');
      onRevoke(reason);
    },
    log,
  );
  watch.start(status.validUntil);
  log.info(
    { cipherDir, mountpoint: opts.mountpoint, readOnly, files: keys.wrappedCount },
    'mounted',
  );

  let unmounted = false;
  return {
    fs,
    keys,
    audit,
    revoked,
    async unmount() {
      if (unmounted) return;
      unmounted = true;
      watch.stop();
      await agent?.stop();
      if (fuse) await unmountFuse(fuse);
      await fs.closeAll();
      await audit.stop();
      keys.wipe();
      freeze.wipe();
      log.info({ mountpoint: opts.mountpoint }, 'unmounted');
    },
  };
}

/** Unmounts a mountpoint from outside the daemon (the CLI's `trefs unmount`). */
export function unmountPath(mountpoint: string): Promise<void> {
  return new Promise((res, rej) =>
    Fuse.unmount(resolve(mountpoint), (err) => (err ? rej(err) : res())),
  );
}
