import { describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { encodeWrapContext, generateKeyPair, unwrapKey, wrapKey } from '../src/envelope.js';
import type { WrapContext } from '../src/envelope.js';
import { AuthenticationError } from '../src/errors.js';
import {
  dekContext,
  egressContext,
  projectKeyContext,
  uploadResumeContext,
  vaultRecoveryContext,
  vaultShareContext,
  volumeKeyContext,
} from '../src/wrap-contexts.js';

describe('wrap contexts', () => {
  it('encode exactly as the records already stored were wrapped', () => {
    // Written out by hand: a change to a builder would orphan every stored wrapped key.
    const stored: Array<[WrapContext, WrapContext]> = [
      [projectKeyContext('p1', 3), { purpose: 'project-key', projectId: 'p1', epoch: 3 }],
      [volumeKeyContext('p1'), { purpose: 'volume-key', projectId: 'p1' }],
      [dekContext('p1', 'ab'), { purpose: 'file-dek', projectId: 'p1', fileId: 'ab' }],
      [
        egressContext('p1', 'ab', 'alice'),
        { purpose: 'egress', projectId: 'p1', fileId: 'ab', recipient: 'alice' },
      ],
      [uploadResumeContext('s1'), { purpose: 'upload-resume', recipient: 's1' }],
      [
        vaultShareContext('vic', 'tara', 'k1'),
        { purpose: 'vault-share', recipient: 'vic->tara auth:k1' },
      ],
      [
        vaultRecoveryContext('vic', 'tara', 7),
        { purpose: 'vault-recovery', recipient: 'vic<-tara#7' },
      ],
    ];
    for (const [built, literal] of stored) {
      expect(Buffer.from(encodeWrapContext(built))).toEqual(
        Buffer.from(encodeWrapContext(literal)),
      );
    }
  });

  it('a key wrapped for one purpose opens under no other', async () => {
    const kp = await generateKeyPair('x25519');
    const all = [
      projectKeyContext('p1', 0),
      projectKeyContext('p1', 1),
      volumeKeyContext('p1'),
      volumeKeyContext('p2'),
      dekContext('p1', 'ab'),
      egressContext('p1', 'ab', 'alice'),
      egressContext('p1', 'ab', 'bob'),
      uploadResumeContext('p1'),
      vaultShareContext('vic', 'tara', 'k1'),
      vaultShareContext('vic', 'tara', 'k2'),
      vaultRecoveryContext('vic', 'tara', 7),
      vaultRecoveryContext('vic', 'theo', 7),
    ];
    const secret = randomBytes(32);
    for (const [i, ctx] of all.entries()) {
      const wrapped = await wrapKey(secret, kp, ctx);
      expect(Buffer.from(await unwrapKey(wrapped, kp, ctx))).toEqual(secret);
      for (const [j, other] of all.entries()) {
        if (i !== j)
          await expect(unwrapKey(wrapped, kp, other)).rejects.toThrow(AuthenticationError);
      }
    }
  });
});
