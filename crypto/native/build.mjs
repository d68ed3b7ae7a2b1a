// Builds the AES-GCM block addon (binding.gyp) with the node-gyp that npm bundles, against the
// headers of the running Node (its include/node holds node_api.h and the OpenSSL headers), so
// nothing is downloaded. TRE_CRYPTO_NATIVE=0 skips it: content encryption then runs on the
// slower pure-JS path. Any other failure fails the build, so a missing toolchain is noticed.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function fail(message) {
  console.error(`crypto native build: ${message}`);
  console.error(
    'crypto native build: install gcc, g++, make and python3, or set TRE_CRYPTO_NATIVE=0 to build without the addon (slower content encryption)',
  );
  process.exit(1);
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  return candidates.find((p) => p !== undefined && p !== '' && existsSync(p));
}

function mtime(path) {
  return existsSync(path) ? statSync(path).mtimeMs : 0;
}

if (process.env.TRE_CRYPTO_NATIVE === '0') {
  console.log('crypto native build: skipped (TRE_CRYPTO_NATIVE=0)');
  process.exit(0);
}
const nodedir = process.env.npm_config_nodedir || resolve(dirname(process.execPath), '..');
if (!existsSync(join(nodedir, 'include', 'node', 'node_api.h'))) {
  fail(`no Node headers in ${join(nodedir, 'include', 'node')}`);
}
const gyp = findNodeGyp();
if (gyp === undefined) fail('node-gyp not found (it ships with npm)');

const configured = mtime(join(pkg, 'build', 'config.gypi'));
const steps = configured > mtime(join(pkg, 'binding.gyp')) ? ['build'] : ['configure', 'build'];
const r = spawnSync(process.execPath, [gyp, ...steps, `--nodedir=${nodedir}`, '--loglevel=warn'], {
  cwd: pkg,
  stdio: 'inherit',
});
if (r.status !== 0) fail(`node-gyp ${steps.join(' ')} failed`);
