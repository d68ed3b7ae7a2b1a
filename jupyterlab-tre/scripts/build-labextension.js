#!/usr/bin/env node
// Builds the prebuilt labextension into jupyterlab_tre/labextension with @jupyterlab/builder
// against the core package of the JupyterLab in the repository's .venv (scripts/quickstart
// creates it). `jupyter labextension build` is not used: since 4.5 it delegates to
// jupyter-builder, which runs its bundled yarn from inside .venv, where this repository's
// `"type": "module"` makes Node refuse it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const python = join(pkg, '..', '.venv', 'bin', 'python');
const probe = existsSync(python)
  ? spawnSync(
      python,
      [
        '-c',
        'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))',
      ],
      { encoding: 'utf8' },
    )
  : null;
if (!probe || probe.status !== 0) {
  console.log(
    'jupyterlab-tre: JupyterLab is not installed in .venv: the labextension bundle was not ' +
      'built. Run scripts/quickstart (it creates .venv), then npm run build again.',
  );
  process.exit(0);
}
const builder = createRequire(join(pkg, 'package.json')).resolve(
  '@jupyterlab/builder/lib/build-labextension.js',
);
const mode = process.argv.includes('--development') ? ['--development'] : [];
const r = spawnSync(process.execPath, [builder, '--core-path', probe.stdout.trim(), ...mode, pkg], {
  cwd: pkg,
  stdio: 'inherit',
});
process.exit(r.status ?? 1);
