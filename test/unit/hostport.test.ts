import { describe, expect, it } from 'vitest';
import { formatHostPort, parseHostPort } from '../../src/util/hostport.js';

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
