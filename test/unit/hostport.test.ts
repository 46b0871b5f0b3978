import { describe, expect, it } from 'vitest';
import { canonicalHost, formatHostPort, hostPortsOverlap, ipv4LiteralProblem, isLoopback, isWildcard, parseHostPort } from '../../src/util/hostport.js';

describe('ADDRESS:PORT', () => {
  it('reads IPv4, bracketed IPv6, names, and unbracketed IPv6 by its last colon', () => {
    expect(parseHostPort('127.0.0.1:8443')).toEqual({ host: '127.0.0.1', port: 8443 });
    expect(parseHostPort('[fd00::1]:6443')).toEqual({ host: 'fd00::1', port: 6443 });
    expect(parseHostPort('api.example:6443')).toEqual({ host: 'api.example', port: 6443 });
    expect(parseHostPort('::1:8443')).toEqual({ host: '::1', port: 8443 });
  });

  it('refuses what is not ADDRESS:PORT, and ports outside 1..65535', () => {
    for (const bad of ['127.0.0.1', ':8443', '127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1:99999', 'a b:80', '[::1:80', '[::1]:', 'host:80x']) {
      expect(parseHostPort(bad), bad).toBeUndefined();
    }
  });

  it('writes IPv6 in brackets, the rest as it is', () => {
    expect(formatHostPort('::1', 8443)).toBe('[::1]:8443');
    expect(formatHostPort('10.0.0.1', 6443)).toBe('10.0.0.1:6443');
    expect(formatHostPort('api.example', 6443)).toBe('api.example:6443');
  });
});

describe('addresses compared and classified', () => {
  it('digits and dots that are not an IPv4 address say why', () => {
    expect(ipv4LiteralProblem('10.0.0.1')).toBeUndefined();
    expect(ipv4LiteralProblem('node-1.example')).toBeUndefined();
    expect(ipv4LiteralProblem('10.0.0.256')).toBe(
      '"10.0.0.256" is not an IPv4 address (256 is above 255), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
    );
    expect(ipv4LiteralProblem('010.0.0.01')).toBe('"010.0.0.01" is not an IPv4 address: 010 has a leading zero, which some tools read as octal; write 10.0.0.1');
  });

  it('one spelling per address', () => {
    expect(canonicalHost('FD00:0:0::1')).toBe(canonicalHost('fd00::1'));
    expect(canonicalHost('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalHost('::ffff:a00:1')).toBe('10.0.0.1');
    expect(canonicalHost('Node-1.Example')).toBe('node-1.example');
    expect(canonicalHost('::')).toBe('0:0:0:0:0:0:0:0');
  });

  it('loopback and wildcard in every spelling', () => {
    for (const h of ['127.0.0.1', '127.9.9.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['10.0.0.1', '::', '0.0.0.0', 'fd00::1', 'localhost']) expect(isLoopback(h), h).toBe(false);
    for (const h of ['0.0.0.0', '::', '0::0']) expect(isWildcard(h), h).toBe(true);
    expect(isWildcard('127.0.0.1')).toBe(false);
  });

  it('two sockets overlap on one port with one address, or a wildcard', () => {
    const hp = (host: string, port: number) => ({ host, port });
    expect(hostPortsOverlap(hp('127.0.0.1', 8443), hp('127.0.0.1', 8443))).toBe(true);
    expect(hostPortsOverlap(hp('::1', 8443), hp('0::1', 8443))).toBe(true);
    expect(hostPortsOverlap(hp('0.0.0.0', 8443), hp('10.0.0.1', 8443))).toBe(true);
    expect(hostPortsOverlap(hp('127.0.0.1', 8443), hp('::', 8443))).toBe(true);
    expect(hostPortsOverlap(hp('127.0.0.1', 8443), hp('127.0.0.2', 8443))).toBe(false);
    expect(hostPortsOverlap(hp('0.0.0.0', 8443), hp('0.0.0.0', 8444))).toBe(false);
  });
});
