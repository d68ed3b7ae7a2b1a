import { beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { FormatError, InvalidArgumentError, ShareIntegrityError } from '../src/errors.js';
import { combineShares, decodeShare, encodeShare, splitSecret } from '../src/shamir.js';

const SECRET = new Uint8Array(32).map((_, i) => 0xa0 ^ i);

function subsets<T>(items: T[], k: number): T[][] {
  if (k === 0) return [[]];
  if (items.length < k) return [];
  const [head, ...rest] = items as [T, ...T[]];
  return [...subsets(rest, k - 1).map((s) => [head, ...s]), ...subsets(rest, k)];
}

const eq = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection, got a value');
}

describe('3-of-5', () => {
  let shares: Uint8Array[];
  beforeAll(async () => {
    shares = await splitSecret(SECRET, { threshold: 3, shares: 5 });
  });

  it('has the documented layout', () => {
    expect(shares).toHaveLength(5);
    for (const s of shares) {
      expect(s).toHaveLength(19 + 32 + 32 + 1 + 8);
      expect([s[0], s[1], s[2]]).toEqual([1, 3, 5]);
      expect(Buffer.from(s.subarray(3, 19)).equals(Buffer.from(shares[0]!.subarray(3, 19)))).toBe(
        true,
      );
      const sum = createHash('sha256')
        .update('tre-shamir-share/v1\0')
        .update(s.subarray(0, s.length - 8))
        .digest()
        .subarray(0, 8);
      expect(sum.equals(Buffer.from(s.subarray(s.length - 8)))).toBe(true);
    }
    // Distinct x coordinates, never 0.
    const xs = new Set(shares.map((s) => s[s.length - 9]));
    expect(xs.size).toBe(5);
    expect(xs.has(0)).toBe(false);
  });

  it('every subset of 3, in any order, recovers the secret', async () => {
    const all = subsets(shares, 3);
    expect(all).toHaveLength(10);
    for (const set of all) {
      expect(eq(await combineShares(set), SECRET)).toBe(true);
      expect(eq(await combineShares([...set].reverse()), SECRET)).toBe(true);
    }
  });

  it('4 and 5 shares recover it too', async () => {
    for (const set of [...subsets(shares, 4), shares]) {
      expect(eq(await combineShares(set), SECRET)).toBe(true);
    }
  });

  it('every subset of 2 fails with ShareIntegrityError naming the threshold', async () => {
    const all = subsets(shares, 2);
    expect(all).toHaveLength(10);
    for (const set of all) {
      const e = await rejection(combineShares(set));
      expect(e).toBeInstanceOf(ShareIntegrityError);
      expect(e.message).toContain('3 shares are needed');
    }
  });

  it('a flipped bit anywhere in any share is detected', async () => {
    const set = shares.slice(0, 3);
    for (let which = 0; which < 3; which++) {
      const len = set[which]!.length;
      for (let bit = 0; bit < len * 8; bit++) {
        const bad = set.map((s) => Uint8Array.from(s));
        bad[which]![bit >> 3]! ^= 1 << (bit & 7);
        await expect(combineShares(bad)).rejects.toThrow(ShareIntegrityError);
      }
    }
  });

  it('a corrupted share whose checksum was recomputed is still caught by the secret tag', async () => {
    const bad = shares.slice(0, 3).map((s) => Uint8Array.from(s));
    const s = bad[1]!;
    s[25]! ^= 0x40;
    const sum = createHash('sha256')
      .update('tre-shamir-share/v1\0')
      .update(s.subarray(0, s.length - 8))
      .digest();
    s.set(sum.subarray(0, 8), s.length - 8);
    const e = await rejection(combineShares(bad));
    expect(e).toBeInstanceOf(ShareIntegrityError);
    expect(e.message).toMatch(/do not reconstruct/);
  });

  it('a duplicated share is detected, even when enough distinct ones are present', async () => {
    const [a, b, c] = shares as [Uint8Array, Uint8Array, Uint8Array];
    for (const set of [
      [a, a, b],
      [a, b, c, b],
    ]) {
      const e = await rejection(combineShares(set));
      expect(e).toBeInstanceOf(ShareIntegrityError);
      expect(e.message).toMatch(/duplicates/);
    }
  });

  it('shares of two splits of the same secret do not mix', async () => {
    const again = await splitSecret(SECRET, { threshold: 3, shares: 5 });
    const e = await rejection(combineShares([shares[0]!, shares[1]!, again[2]!]));
    expect(e).toBeInstanceOf(ShareIntegrityError);
    expect(e.message).toMatch(/different split/);
  });

  it('does not hand back garbage or echo share bytes in messages', async () => {
    const bad = shares.slice(0, 3).map((s) => Uint8Array.from(s));
    bad[2]![30]! ^= 1;
    const e = await rejection(combineShares(bad));
    expect(e.message).not.toContain(Buffer.from(SECRET).toString('hex'));
    expect(e.message).not.toContain(Buffer.from(bad[2]!).toString('base64url').slice(0, 16));
  });
});

describe('share text form', () => {
  it('round-trips through text, tolerating surrounding whitespace', async () => {
    const shares = await splitSecret(SECRET, { threshold: 2, shares: 3 });
    const texts = shares.map(encodeShare);
    for (const t of texts) expect(t).toMatch(/^tre-share:[A-Za-z0-9_-]+$/);
    const back = texts.map((t) => decodeShare(`  ${t}\n`));
    expect(eq(await combineShares(back.slice(1)), SECRET)).toBe(true);
  });

  it.each([
    ['no prefix', 'AAAA'],
    ['a foreign prefix', 'tre-x25519:AAAA'],
    ['invalid characters', 'tre-share:AA+/'],
    ['padding', 'tre-share:AAA='],
  ])('rejects %s with FormatError', (_, text) => {
    expect(() => decodeShare(text)).toThrow(FormatError);
  });
});

describe('malformed input', () => {
  it.each([
    ['threshold 1', { threshold: 1, shares: 3 }],
    ['threshold above shares', { threshold: 4, shares: 3 }],
    ['256 shares', { threshold: 2, shares: 256 }],
    ['a fractional threshold', { threshold: 2.5, shares: 3 }],
  ])('splitSecret refuses %s', async (_, opts) => {
    await expect(splitSecret(SECRET, opts)).rejects.toThrow(InvalidArgumentError);
  });

  it('splitSecret refuses empty and oversized secrets', async () => {
    await expect(splitSecret(new Uint8Array(0), { threshold: 2, shares: 2 })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(splitSecret(new Uint8Array(1025), { threshold: 2, shares: 2 })).rejects.toThrow(
      InvalidArgumentError,
    );
  });

  it('combineShares refuses no shares, non-shares and truncated shares', async () => {
    const shares = await splitSecret(SECRET, { threshold: 2, shares: 2 });
    await expect(combineShares([])).rejects.toThrow(ShareIntegrityError);
    await expect(combineShares([new Uint8Array(10), shares[0]!])).rejects.toThrow(
      ShareIntegrityError,
    );
    await expect(combineShares([shares[0]!, shares[1]!.subarray(0, 70)])).rejects.toThrow(
      ShareIntegrityError,
    );
  });
});

describe('properties', () => {
  it('any k of n shares round-trip a random secret; k-1 shares never do', async () => {
    const params = fc
      .record({
        secret: fc.uint8Array({ minLength: 1, maxLength: 64 }),
        k: fc.integer({ min: 2, max: 8 }),
        extra: fc.integer({ min: 0, max: 5 }),
        seed: fc.nat(),
      })
      .map(({ secret, k, extra, seed }) => ({ secret, k, n: k + extra, seed }));
    await fc.assert(
      fc.asyncProperty(params, async ({ secret, k, n, seed }) => {
        const shares = await splitSecret(secret, { threshold: k, shares: n });
        expect(shares).toHaveLength(n);
        // A pseudo-random choice of k shares, in a pseudo-random order.
        const order = shares
          .map((s, i) => ({ s, r: (i * 2654435761 + seed) % 1000003 }))
          .sort((a, b) => a.r - b.r)
          .map((x) => x.s);
        expect(eq(await combineShares(order.slice(0, k)), secret)).toBe(true);
        await expect(combineShares(order.slice(0, k - 1))).rejects.toThrow(ShareIntegrityError);
      }),
      { numRuns: 150 },
    );
  });

  it('any random byte change in a share set is detected', async () => {
    const shares = await splitSecret(SECRET, { threshold: 3, shares: 5 });
    const change = fc.record({
      which: fc.integer({ min: 0, max: 2 }),
      pos: fc.nat(),
      xor: fc.integer({ min: 1, max: 255 }),
    });
    await fc.assert(
      fc.asyncProperty(change, async ({ which, pos, xor }) => {
        const bad = shares.slice(0, 3).map((s) => Uint8Array.from(s));
        const s = bad[which]!;
        s[pos % s.length]! ^= xor;
        await expect(combineShares(bad)).rejects.toThrow(ShareIntegrityError);
      }),
      { numRuns: 300 },
    );
  });
});
