/**
 * Every CLI of every package answers --version with its package's version, every package
 * carries the release version, and the CHANGELOG's newest release is that version.
 */
import { describe, expect, test } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './support/demo.js';

interface Pkg {
  name: string;
  version: string;
  bin?: Record<string, string>;
}

const root = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  workspaces: string[];
};
const lerna = JSON.parse(readFileSync(join(REPO, 'lerna.json'), 'utf8')) as { version: string };
const pkgs = root.workspaces.map((w) => ({
  dir: w,
  pkg: JSON.parse(readFileSync(join(REPO, w, 'package.json'), 'utf8')) as Pkg,
}));
const CLIS = [
  'desktop-proxy',
  'tre',
  'tre-bridge',
  'tre-crypt',
  'tre-demo',
  'tre-ingress',
  'tre-job-agent',
  'tre-kms',
  'trefs',
];
const clis = pkgs.flatMap(({ dir, pkg }) =>
  Object.entries(pkg.bin ?? {}).map(([name, file]) => ({
    name,
    path: join(REPO, dir, file),
    version: pkg.version,
  })),
);

describe('versions', () => {
  test('the CLIs the operator guide lists all exist', () => {
    expect(clis.map((c) => c.name)).toEqual(expect.arrayContaining(CLIS));
  });

  test.each(clis.filter((c) => CLIS.includes(c.name)).map((c) => [c.name, c] as const))(
    '%s --version prints its package version',
    (_n, c) => {
      const r = spawnSync(process.execPath, [c.path, '--version'], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect({ status: r.status, out: r.stdout.trim() }).toEqual({ status: 0, out: c.version });
    },
  );

  test('every package carries the release version, and the CHANGELOG names it', () => {
    for (const { pkg } of pkgs)
      expect({ name: pkg.name, version: pkg.version }).toEqual({
        name: pkg.name,
        version: lerna.version,
      });
    const changelog = readFileSync(join(REPO, 'CHANGELOG.md'), 'utf8');
    const newest = /^## \[?(\d+\.\d+\.\d+)\]?/m.exec(changelog);
    expect(newest?.[1]).toBe(lerna.version);
  });
});
