import { describe, expect, test } from '@jest/globals';
import { isLoopbackHost, parseListen, parseTarget } from '../src/address.js';
import { ConfigError } from '../src/errors.js';
import { checkOrigin, normaliseOrigin } from '../src/origin.js';

describe('addresses', () => {
  test('targets: unix sockets and HOST:PORT', () => {
    expect(parseTarget('unix:/run/vnc.sock')).toEqual({ kind: 'unix', path: '/run/vnc.sock' });
    expect(parseTarget('127.0.0.1:5901')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 5901 });
    expect(parseTarget('[::1]:5901')).toEqual({ kind: 'tcp', host: '::1', port: 5901 });
    for (const bad of ['unix:relative', 'host', 'host:0', 'host:70000', ':5901', '::1:5901']) {
      expect(() => parseTarget(bad)).toThrow(ConfigError);
    }
  });

  test('listen addresses accept port 0', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
  });

  test('only loopback addresses count as loopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) {
      expect(isLoopbackHost(h)).toBe(true);
    }
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.org', '128.0.0.1', 'localhost.evil']) {
      expect(isLoopbackHost(h)).toBe(false);
    }
  });
});

describe('origin check', () => {
  const allowed = [normaliseOrigin('https://hub.example.org/')];

  test('same host, allow-listed origins and non-browser clients pass', () => {
    expect(checkOrigin('http://node7:6080', 'node7:6080', [])).toEqual({ ok: true });
    expect(checkOrigin('https://hub.example.org', 'node7:6080', allowed)).toEqual({ ok: true });
    expect(checkOrigin(undefined, 'node7:6080', [])).toEqual({ ok: true });
  });

  test('other sites, other ports, opaque and malformed origins are refused', () => {
    expect(checkOrigin('https://evil.example', 'node7:6080', allowed)).toEqual({
      ok: false,
      reason: 'origin-not-allowed',
    });
    expect(checkOrigin('http://node7:6081', 'node7:6080', [])).toMatchObject({ ok: false });
    expect(checkOrigin('https://hub.example.org.evil', 'x', allowed)).toMatchObject({ ok: false });
    expect(checkOrigin('null', 'node7:6080', [])).toMatchObject({ ok: false });
    expect(checkOrigin('file:///x', 'node7:6080', [])).toMatchObject({ ok: false });
  });

  test('allow-list entries must be http(s) URLs', () => {
    expect(() => normaliseOrigin('hub.example.org')).toThrow(ConfigError);
    expect(() => normaliseOrigin('ftp://hub.example.org')).toThrow(ConfigError);
  });
});
