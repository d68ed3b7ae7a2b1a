/**
 * Key handling without FUSE: the key ring registers new DEKs before handing them out and wipes
 * everything on revocation.
 */
import { describe, expect, test } from '@jest/globals';
import { generateKeyPair, unwrapKey } from '@tre/crypto';
import { dekContext } from '@tre/crypto';
import { KeyRing } from '../src/keyring.js';
import { MemoryKeyService } from '../src/memory-key-service.js';
import { parseKeyInput } from '../src/kek-input.js';

describe('key ring', () => {
  test('new DEKs are registered before use; wipe zeroes keys and refuses further use', async () => {
    const kek = await generateKeyPair('x25519');
    const { service, projectKey } = await MemoryKeyService.createProject('p1', kek);
    const ring = await KeyRing.open(service, kek, { poolSize: 4 });
    const k = await ring.newFileKey();
    const hex = k.fileId.toString('hex');
    const rec = service.project.deks.get(hex);
    expect(rec).toBeDefined();
    const unwrapped = await unwrapKey(rec!.wrappedDek, projectKey, dekContext('p1', hex));
    expect(Buffer.from(unwrapped).equals(k.dek)).toBe(true);
    expect((await ring.fileKey(k.fileId)).dek.equals(k.dek)).toBe(true);
    const volume = ring.volumeKey();
    ring.wipe();
    expect(k.dek.every((b) => b === 0)).toBe(true);
    expect(volume.every((b) => b === 0)).toBe(true);
    expect(kek.privateKey.every((b) => b === 0)).toBe(true);
    expect(() => ring.fileKey(k.fileId)).toThrow(/ended/);
  });

  test('a KEK that does not open the project key is a WrongKeyError', async () => {
    const kek = await generateKeyPair('x25519');
    const { service } = await MemoryKeyService.createProject('p1', kek);
    const other = await generateKeyPair('x25519');
    await expect(KeyRing.open(service, other)).rejects.toMatchObject({ exitCode: 4 });
  });

  test('key input: parsed, and the input buffer is zeroed', async () => {
    const kek = await generateKeyPair('x25519');
    const input = Buffer.from(
      JSON.stringify({
        kem: 'x25519',
        privateKey: Buffer.from(kek.privateKey).toString('base64url'),
      }),
    );
    const { kek: parsed } = await parseKeyInput(input);
    expect(parsed.kid).toBe(kek.kid);
    expect(input.every((b) => b === 0)).toBe(true);
    await expect(parseKeyInput(Buffer.from('nope'))).rejects.toMatchObject({ exitCode: 3 });
  });
});
