/**
 * Key-recovery vault with the real Shamir and HPKE: the client splits its KEK 3 of 5, each share
 * wrapped to one trustee; recovery needs three trustee approvals, each re-encrypting its share to
 * the user's fresh recovery key; only the user combines. Two are not enough; a wrong share shows.
 */
import { createHash } from 'node:crypto';
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
  wrapKey,
  type KeyPair,
} from '@tre/crypto';
import type { KmsClient } from '../src/client.js';
import { onboard, startKms, type TestKms } from './helpers.js';

let t: TestKms;
const TRUSTEES = ['tina', 'theo', 'tara', 'tom', 'tess'];
const trustee = new Map<string, { c: KmsClient; kp: KeyPair }>();
let vic: { c: KmsClient; kp: KeyPair };

const shareCtx = (owner: string, holder: string) => ({
  purpose: 'vault-share',
  recipient: `${owner}->${holder}`,
});
const recoveryCtx = (owner: string, holder: string, id: number) => ({
  purpose: 'vault-recovery',
  recipient: `${owner}<-${holder}#${id}`,
});

async function withKek(name: string): Promise<{ c: KmsClient; kp: KeyPair }> {
  const c = await onboard(t, name);
  const kp = await generateKeyPair();
  await c.addKek(encodePublicKey(kp));
  return { c, kp };
}

/** The user's client: split the KEK private key, wrap share i to trustee i. */
async function makeVault(
  owner: { c: KmsClient; kp: KeyPair },
  name: string,
): Promise<Uint8Array[]> {
  const shares = await splitSecret(owner.kp.privateKey, { threshold: 3, shares: 5 });
  const wrapped = await Promise.all(
    TRUSTEES.map(async (tr, i) => ({
      trustee: tr,
      wrapped: await wrapKey(shares[i]!, trustee.get(tr)!.kp, shareCtx(name, tr)),
    })),
  );
  await owner.c.putVault(3, wrapped);
  return shares;
}

/** A trustee's client: unwrap its share, re-encrypt it to the recovery key, approve. */
async function approve(tr: string, owner: string, tamper?: (share: Uint8Array) => Uint8Array) {
  const me = trustee.get(tr)!;
  const [req] = (await me.c.trusteeRecoveries()).filter((r) => r.username === owner);
  let share = await unwrapKey(req!.share, me.kp, shareCtx(owner, tr));
  if (tamper) share = tamper(share);
  const rewrapped = await wrapKey(
    share,
    decodePublicKey(req!.recoveryPublicKey),
    recoveryCtx(owner, tr, req!.id),
  );
  return me.c.approveRecovery(req!.id, rewrapped);
}

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
  await makeVault(vic, 'vic');
  expect(await vic.c.vault()).toMatchObject({
    threshold: 3,
    shares: 5,
    trustees: TRUSTEES,
    kid: vic.kp.kid,
  });

  // Passphrase lost: a fresh recovery key pair, made on the user's machine.
  const recovery = await generateKeyPair();
  const req = await vic.c.requestRecovery(encodePublicKey(recovery));
  expect(req).toMatchObject({ state: 'open', approvals: 0, shares: [] });

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
    ready.shares.map((s) => unwrapKey(s.wrapped, recovery, recoveryCtx('vic', s.trustee, req.id))),
  );
  const recovered = await combineShares(plain);
  expect(Buffer.from(recovered).equals(Buffer.from(vic.kp.privateKey))).toBe(true);
  expect((await publicKeyFromPrivate('x25519', recovered)).kid).toBe(vic.kp.kid);

  // A fourth approval after the fact is refused; so is someone who holds no share.
  expect(await trustee.get('theo')!.c.trusteeRecoveries()).toEqual([]);
  const lateShare = await wrapKey(new Uint8Array(32), recovery, recoveryCtx('vic', 'theo', req.id));
  await expect(trustee.get('theo')!.c.approveRecovery(req.id, lateShare)).rejects.toMatchObject({
    status: 409,
    code: 'recovery_not_open',
  });
  const outsider = await withKek('olga');
  await expect(outsider.c.trusteeRecoveries()).rejects.toMatchObject({ reason: 'not_a_trustee' });
});

test('a wrong share is detected when the user combines', async () => {
  const wendy = await withKek('wendy');
  await makeVault(wendy, 'wendy');
  const recovery = await generateKeyPair();
  const req = await wendy.c.requestRecovery(encodePublicKey(recovery));
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
      unwrapKey(s.wrapped, recovery, recoveryCtx('wendy', s.trustee, req.id)),
    ),
  );
  await expect(combineShares(plain)).rejects.toThrow(/wrong or tampered/);
});

test('a share re-encrypted to anything but the recovery key is refused by the KMS', async () => {
  const xena = await withKek('xena');
  await makeVault(xena, 'xena');
  await xena.c.requestRecovery(encodePublicKey(await generateKeyPair()));
  const me = trustee.get('tara')!;
  const [req] = (await me.c.trusteeRecoveries()).filter((r) => r.username === 'xena');
  const share = await unwrapKey(req!.share, me.kp, shareCtx('xena', 'tara'));
  const elsewhere = await generateKeyPair();
  await expect(
    me.c.approveRecovery(
      req!.id,
      await wrapKey(share, elsewhere, recoveryCtx('xena', 'tara', req!.id)),
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
    wrapped: await wrapKey(shares[i]!, kp, shareCtx('yan', tr)),
  });
  const four = await Promise.all(
    TRUSTEES.slice(0, 4).map((tr, i) => wrap(tr, trustee.get(tr)!.kp, i)),
  );
  await expect(yan.c.putVault(3, [...four, await wrap('vic', vic.kp, 4)])).rejects.toMatchObject({
    code: 'not_a_trustee',
  });
  await expect(yan.c.putVault(5, four)).rejects.toMatchObject({ code: 'invalid_threshold' });
  await expect(yan.c.putVault(3, [four[0]!, four[0]!, four[1]!])).rejects.toMatchObject({
    code: 'duplicate_trustee',
  });
  await expect(yan.c.vault()).rejects.toMatchObject({ status: 404 });
});
