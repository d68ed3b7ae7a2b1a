/**
 * Key-recovery vault with the real Shamir and HPKE: the client splits its KEK 3 of 5, each share
 * wrapped to one trustee; recovery needs three trustee approvals, each re-encrypting its share to
 * the user's fresh recovery key; only the user combines. Two are not enough; a wrong share shows.
 */
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import {
  combineShares,
  decodePublicKey,
  encodePublicKey,
  generateKeyPair,
  publicKeyFromPrivate,
  ShareIntegrityError,
  splitSecret,
  unwrapKey,
  vaultRecoveryContext,
  vaultShareContext,
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import type { KmsClient } from '../src/client.js';
import {
  authPublicKeyText,
  recoveryAuthKid,
  signRecoveryRequest,
  verifyRecoveryRequest,
} from '../src/recovery.js';
import { DAY, onboard, startKms, type TestKms } from './helpers.js';

let t: TestKms;
const TRUSTEES = ['tina', 'theo', 'tara', 'tom', 'tess'];
const trustee = new Map<string, { c: KmsClient; kp: KeyPair }>();
interface Owner {
  name: string;
  c: KmsClient;
  kp: KeyPair;
  /** The recovery-authentication key: kept apart from the key file (e.g. a printed code). */
  auth: KeyObject;
}
let vic: Owner;

async function withKek(name: string): Promise<Owner> {
  const c = await onboard(t, name);
  const kp = await generateKeyPair();
  await c.addKek(encodePublicKey(kp));
  return { name, c, kp, auth: generateKeyPairSync('ed25519').privateKey };
}

const authKidOf = (o: Owner): string => recoveryAuthKid(authPublicKeyText(o.auth));

/** The user's client: split the KEK private key, wrap share i to trustee i. */
async function makeVault(owner: Owner): Promise<Uint8Array[]> {
  const shares = await splitSecret(owner.kp.privateKey, { threshold: 3, shares: 5 });
  const wrapped = await Promise.all(
    TRUSTEES.map(async (tr, i) => ({
      trustee: tr,
      wrapped: await wrapKey(
        shares[i]!,
        trustee.get(tr)!.kp,
        vaultShareContext(owner.name, tr, authKidOf(owner)),
      ),
    })),
  );
  await owner.c.putVault(3, wrapped, authPublicKeyText(owner.auth));
  return shares;
}

/** The owner's client: a request signed with the recovery-authentication key. */
function signedRequest(owner: Owner, recovery: KeyPair, signWith: KeyObject = owner.auth) {
  const recoveryPublicKey = encodePublicKey(recovery);
  const requestedAt = t.clock.now.toISOString();
  const signature = signRecoveryRequest(signWith, {
    username: owner.name,
    vaultKid: owner.kp.kid,
    authKid: authKidOf(owner),
    recoveryPublicKey,
    requestedAt,
  });
  return { recoveryPublicKey, requestedAt, signature };
}

/** Past the waiting period, when trustees see the request. */
function waitOut(): void {
  t.clock.now = new Date(t.clock.now.getTime() + DAY + 60_000);
}

/**
 * A trustee's client: check the owner's signature, unwrap its share under the context naming the
 * owner's recovery-authentication key, re-encrypt it to the recovery key, approve.
 */
async function approve(tr: string, owner: string, tamper?: (share: Uint8Array) => Uint8Array) {
  const me = trustee.get(tr)!;
  const [req] = (await me.c.trusteeRecoveries()).filter((r) => r.username === owner);
  const authKid = recoveryAuthKid(req!.recoveryAuthKey);
  const signed = verifyRecoveryRequest(
    req!.recoveryAuthKey,
    {
      username: owner,
      vaultKid: req!.vaultKid,
      authKid,
      recoveryPublicKey: req!.recoveryPublicKey,
      requestedAt: req!.requestedAt,
    },
    req!.signature,
  );
  if (!signed) throw new Error(`${tr}: the request is not signed by ${owner}`);
  let share = await unwrapKey(req!.share, me.kp, vaultShareContext(owner, tr, authKid));
  if (tamper) share = tamper(share);
  const rewrapped = await wrapKey(
    share,
    decodePublicKey(req!.recoveryPublicKey),
    vaultRecoveryContext(owner, tr, req!.id),
  );
  return me.c.approveRecovery(req!.id, rewrapped);
}

const trusteeClient = (name: string): KmsClient => trustee.get(name)!.c;

beforeAll(async () => {
  t = await startKms();
  const admin = t.as('admin', true);
  for (const tr of TRUSTEES) {
    trustee.set(tr, await withKek(tr));
    await admin.setTrustee(tr, true);
  }
  vic = await withKek('vic');
});

afterAll(async () => {
  await t.stop();
});

test('three of five trustees recover the key; two cannot', async () => {
  await makeVault(vic);
  expect(await vic.c.vault()).toMatchObject({
    threshold: 3,
    shares: 5,
    trustees: TRUSTEES,
    kid: vic.kp.kid,
  });

  // Passphrase lost: a fresh recovery key pair, made on the user's machine.
  const recovery = await generateKeyPair();
  const req = await vic.c.requestRecovery(signedRequest(vic, recovery));
  expect(req).toMatchObject({ state: 'waiting', approvals: 0, shares: [] });
  waitOut();
  expect(await vic.c.recovery(req.id)).toMatchObject({ state: 'open' });

  await approve('tina', 'vic');
  await approve('tara', 'vic');
  const two = await vic.c.recovery(req.id);
  expect(two).toMatchObject({ state: 'open', approvals: 2, shares: [] });

  // Trustees who answered see the request no more; two shares in hand do not give the key.
  expect((await trustee.get('tina')!.c.trusteeRecoveries()).map((r) => r.username)).not.toContain(
    'vic',
  );
  const shares = await splitSecret(vic.kp.privateKey, { threshold: 3, shares: 5 });
  await expect(combineShares(shares.slice(0, 2))).rejects.toThrow(ShareIntegrityError);

  const third = await approve('tess', 'vic');
  expect(third).toMatchObject({ approvals: 3, threshold: 3 });
  const ready = await vic.c.recovery(req.id);
  expect(ready.state).toBe('ready');
  expect(ready.shares.map((s) => s.trustee).sort()).toEqual(['tara', 'tess', 'tina']);

  const plain = await Promise.all(
    ready.shares.map((s) =>
      unwrapKey(s.wrapped, recovery, vaultRecoveryContext('vic', s.trustee, req.id)),
    ),
  );
  const recovered = await combineShares(plain);
  expect(Buffer.from(recovered).equals(Buffer.from(vic.kp.privateKey))).toBe(true);
  expect((await publicKeyFromPrivate('x25519', recovered)).kid).toBe(vic.kp.kid);

  // A fourth approval after the fact is refused; so is someone who holds no share.
  expect(await trustee.get('theo')!.c.trusteeRecoveries()).toEqual([]);
  const lateShare = await wrapKey(
    new Uint8Array(32),
    recovery,
    vaultRecoveryContext('vic', 'theo', req.id),
  );
  await expect(trustee.get('theo')!.c.approveRecovery(req.id, lateShare)).rejects.toMatchObject({
    status: 409,
    code: 'recovery_not_open',
  });
  const outsider = await withKek('olga');
  await expect(outsider.c.trusteeRecoveries()).rejects.toMatchObject({ reason: 'not_a_trustee' });
});

test('a wrong share is detected when the user combines', async () => {
  const wendy = await withKek('wendy');
  await makeVault(wendy);
  const recovery = await generateKeyPair();
  const req = await wendy.c.requestRecovery(signedRequest(wendy, recovery));
  waitOut();
  await approve('tina', 'wendy');
  await approve('theo', 'wendy');
  // Tom's client sends a share whose bytes were altered, with a recomputed checksum so that only
  // the reconstruction itself can notice.
  await approve('tom', 'wendy', (s) => {
    const bad = Uint8Array.from(s);
    bad[25] = bad[25]! ^ 0x01;
    const sum = createHash('sha256')
      .update('tre-shamir-share/v1\0')
      .update(bad.subarray(0, bad.length - 8))
      .digest();
    bad.set(sum.subarray(0, 8), bad.length - 8);
    return bad;
  });
  const ready = await wendy.c.recovery(req.id);
  expect(ready.state).toBe('ready');
  const plain = await Promise.all(
    ready.shares.map((s) =>
      unwrapKey(s.wrapped, recovery, vaultRecoveryContext('wendy', s.trustee, req.id)),
    ),
  );
  await expect(combineShares(plain)).rejects.toThrow(/wrong or tampered/);
});

test('a share re-encrypted to anything but the recovery key is refused by the KMS', async () => {
  const xena = await withKek('xena');
  await makeVault(xena);
  await xena.c.requestRecovery(signedRequest(xena, await generateKeyPair()));
  waitOut();
  const me = trustee.get('tara')!;
  const [req] = (await me.c.trusteeRecoveries()).filter((r) => r.username === 'xena');
  const share = await unwrapKey(
    req!.share,
    me.kp,
    vaultShareContext('xena', 'tara', authKidOf(xena)),
  );
  const elsewhere = await generateKeyPair();
  await expect(
    me.c.approveRecovery(
      req!.id,
      await wrapKey(share, elsewhere, vaultRecoveryContext('xena', 'tara', req!.id)),
    ),
  ).rejects.toMatchObject({
    status: 400,
    code: 'wrong_recipient',
  });
});

test('vault rules: trustees only, no self, threshold within the share count', async () => {
  const yan = await withKek('yan');
  const shares = await splitSecret(yan.kp.privateKey, { threshold: 3, shares: 5 });
  const wrap = async (tr: string, kp: KeyPair, i: number) => ({
    trustee: tr,
    wrapped: await wrapKey(shares[i]!, kp, vaultShareContext('yan', tr, authKidOf(yan))),
  });
  const four = await Promise.all(
    TRUSTEES.slice(0, 4).map((tr, i) => wrap(tr, trustee.get(tr)!.kp, i)),
  );
  await expect(
    yan.c.putVault(3, [...four, await wrap('vic', vic.kp, 4)], authPublicKeyText(yan.auth)),
  ).rejects.toMatchObject({
    code: 'not_a_trustee',
  });
  await expect(yan.c.putVault(5, four, authPublicKeyText(yan.auth))).rejects.toMatchObject({
    code: 'invalid_threshold',
  });
  await expect(
    yan.c.putVault(3, [four[0]!, four[0]!, four[1]!], authPublicKeyText(yan.auth)),
  ).rejects.toMatchObject({
    code: 'duplicate_trustee',
  });
  await expect(yan.c.vault()).rejects.toMatchObject({ status: 404 });
});

test('a request not signed by the owner is refused with a reason, and audit-logged', async () => {
  const zoe = await withKek('zoe');
  await makeVault(zoe);
  const recovery = await generateKeyPair();
  // Someone acting as zoe at the hub, without her recovery-authentication key.
  const forger = generateKeyPairSync('ed25519').privateKey;
  await expect(zoe.c.requestRecovery(signedRequest(zoe, recovery, forger))).rejects.toMatchObject({
    status: 403,
    reason: 'bad_recovery_signature',
  });
  // A genuine signature does not carry over to another recovery key, owner or time.
  const good = signedRequest(zoe, recovery);
  const other = encodePublicKey(await generateKeyPair());
  await expect(zoe.c.requestRecovery({ ...good, recoveryPublicKey: other })).rejects.toMatchObject({
    reason: 'bad_recovery_signature',
  });
  await expect(
    zoe.c.requestRecovery({
      ...good,
      requestedAt: new Date(Date.parse(good.requestedAt) + 1).toISOString(),
    }),
  ).rejects.toMatchObject({ reason: 'bad_recovery_signature' });
  const yves = await withKek('yves');
  await makeVault(yves);
  await expect(yves.c.requestRecovery(good)).rejects.toMatchObject({
    reason: 'bad_recovery_signature',
  });
  // An old signed request replayed later is stale.
  t.clock.now = new Date(t.clock.now.getTime() + 11 * 60_000);
  await expect(zoe.c.requestRecovery(good)).rejects.toMatchObject({
    status: 403,
    reason: 'stale_recovery_request',
  });
  expect(await zoe.c.recoveries()).toEqual([]);
  for (const trustee of TRUSTEES) {
    expect(
      (await trusteeClient(trustee).trusteeRecoveries()).filter((r) => r.username === 'zoe'),
    ).toEqual([]);
  }
  const denied = t.server.kms.db
    .prepare(
      "SELECT result FROM audit_log WHERE action = 'recovery.request' AND object = 'person:zoe'",
    )
    .all() as Array<{ result: string }>;
  expect(denied.map((r) => r.result)).toEqual([
    'denied:bad_recovery_signature',
    'denied:bad_recovery_signature',
    'denied:bad_recovery_signature',
    'denied:stale_recovery_request',
  ]);
});

test('a signed request waits, is shown to the owner and admins, and an admin can cancel it', async () => {
  const uma = await withKek('uma');
  await makeVault(uma);
  const req = await uma.c.requestRecovery(signedRequest(uma, await generateKeyPair()));
  expect(req.state).toBe('waiting');
  expect(Date.parse(req.notBefore!) - t.clock.now.getTime()).toBe(DAY);
  // Trustees neither see nor can approve it inside the waiting period.
  expect(
    (await trusteeClient('tina').trusteeRecoveries()).filter((r) => r.username === 'uma'),
  ).toEqual([]);
  const early = await wrapKey(
    new Uint8Array(32),
    await generateKeyPair(),
    vaultRecoveryContext('uma', 'tina', req.id),
  );
  await expect(trusteeClient('tina').approveRecovery(req.id, early)).rejects.toMatchObject({
    status: 409,
    reason: 'recovery_waiting',
  });
  // The owner sees it in their list; admins got a notification.
  expect(await uma.c.recoveries()).toEqual([
    expect.objectContaining({ id: req.id, state: 'waiting', notBefore: req.notBefore }),
  ]);
  const admin = t.as('admin', true);
  const notes = await admin.listNotifications();
  expect(notes).toContainEqual(
    expect.objectContaining({ username: 'uma', kind: 'recovery_requested' }),
  );
  // Only an admin cancels; then trustees never see it, even after the waiting period.
  await expect(uma.c.cancelRecovery(req.id)).rejects.toMatchObject({
    status: 403,
    reason: 'admin_required',
  });
  await expect(admin.cancelRecovery(req.id)).resolves.toMatchObject({
    state: 'cancelled',
    cancelledBy: 'admin',
  });
  await expect(admin.cancelRecovery(req.id)).rejects.toMatchObject({
    status: 409,
    code: 'recovery_not_open',
  });
  await expect(admin.cancelRecovery(999_999)).rejects.toMatchObject({ status: 404 });
  waitOut();
  expect(
    (await trusteeClient('tina').trusteeRecoveries()).filter((r) => r.username === 'uma'),
  ).toEqual([]);
  expect(await uma.c.recoveries()).toEqual([
    expect.objectContaining({ id: req.id, state: 'cancelled', cancelledBy: 'admin' }),
  ]);
});

test('a KMS that swaps the recovery-authentication key cannot make a trustee approve', async () => {
  const ivy = await withKek('ivy');
  await makeVault(ivy);
  // The attacker controls the KMS database: a key of theirs replaces ivy's, and they sign.
  const attacker = generateKeyPairSync('ed25519').privateKey;
  t.server.kms.db
    .prepare('UPDATE vaults SET auth_key = ? WHERE username = ?')
    .run(authPublicKeyText(attacker), 'ivy');
  const recovery = await generateKeyPair();
  const recoveryPublicKey = encodePublicKey(recovery);
  const requestedAt = t.clock.now.toISOString();
  const signature = signRecoveryRequest(attacker, {
    username: 'ivy',
    vaultKid: ivy.kp.kid,
    authKid: recoveryAuthKid(authPublicKeyText(attacker)),
    recoveryPublicKey,
    requestedAt,
  });
  await ivy.c.requestRecovery({ recoveryPublicKey, requestedAt, signature });
  waitOut();
  // The signature checks out against the swapped key, but the share was wrapped under ivy's.
  await expect(approve('tina', 'ivy')).rejects.toThrow();
  expect(
    (await trusteeClient('tina').trusteeRecoveries()).filter((r) => r.username === 'ivy'),
  ).toHaveLength(1);
});
