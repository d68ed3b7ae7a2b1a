#!/usr/bin/env node
/**
 * `tre-ingress`: the ingress service as a command of its own, with the options, exit codes and
 * output of `tre ingress serve`.
 */
import { EXIT } from '../errors.js';
import { main, serveCommand, version } from '../cli.js';

const program = serveCommand('tre-ingress').version(version);
void main(process.argv, program).then((code) => {
  // A running service keeps the process alive; anything else (help, errors) exits here.
  if (code !== EXIT.ok || process.argv.slice(2).some((a) => /^(-h|--help|-V|--version)$/.test(a)))
    process.exit(code);
});
