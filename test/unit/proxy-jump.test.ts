import { describe, expect, it } from 'vitest';
import { formatHop, parseProxyJump } from '../../src/connect/proxy-jump.js';

describe('ProxyJump, read as OpenSSH reads it', () => {
  it('[user@]host[:port], the ssh:// form, several hops in order, IPv6 in brackets', () => {
    expect(parseProxyJump('bastion')).toEqual([{ host: 'bastion' }]);
    expect(parseProxyJump('ops@bastion:2222')).toEqual([{ user: 'ops', host: 'bastion', port: 2222 }]);
    expect(parseProxyJump('ssh://ops@bastion:2222/')).toEqual([{ user: 'ops', host: 'bastion', port: 2222 }]);
    expect(parseProxyJump('gw1, ops@[fd00::9]:22')).toEqual([{ host: 'gw1' }, { user: 'ops', host: 'fd00::9', port: 22 }]);
    expect(parseProxyJump(['gw1,gw2', 'gw3'])).toEqual([{ host: 'gw1' }, { host: 'gw2' }, { host: 'gw3' }]);
    expect(parseProxyJump('10.0.0.9')).toEqual([{ host: '10.0.0.9' }]);
  });

  it('none, in any case, alone', () => {
    expect(parseProxyJump('none')).toBe('none');
    expect(parseProxyJump('NONE')).toBe('none');
    expect(parseProxyJump(['none'])).toBe('none');
    expect(parseProxyJump('gw1,none')).toBe('"none" cannot be combined with bastions');
  });

  it('says what is wrong with a hop', () => {
    expect(parseProxyJump('')).toBe('is empty: write [user@]host[:port], or none to go direct');
    expect(parseProxyJump([])).toBe('names no bastion');
    expect(parseProxyJump('gw1,,gw2')).toBe('has an empty bastion (two commas, or a comma at an end)');
    expect(parseProxyJump('gw1,')).toBe('has an empty bastion (two commas, or a comma at an end)');
    expect(parseProxyJump('a b')).toBe('"a b" is not [user@]host[:port]');
    expect(parseProxyJump('gw:123456')).toBe('"gw:123456" is not [user@]host[:port]');
    expect(parseProxyJump('gw:0')).toBe('"gw:0" is not [user@]host[:port]: port 0 is not from 1 to 65535');
    expect(parseProxyJump('gw:70000')).toBe('"gw:70000" is not [user@]host[:port]: port 70000 is not from 1 to 65535');
    expect(parseProxyJump('[gw]:22')).toBe('"[gw]:22" is not [user@]host[:port]: only an IPv6 address goes in brackets');
  });

  it('an IPv6 address without brackets is told where the brackets go', () => {
    expect(parseProxyJump('fd00::9')).toBe('"fd00::9" is not [user@]host[:port]: an IPv6 address goes in brackets, [fd00::9]');
    expect(parseProxyJump('ops@fd00::9')).toBe('"ops@fd00::9" is not [user@]host[:port]: an IPv6 address goes in brackets, [fd00::9]');
  });

  it('a trailing slash only in the ssh:// form', () => {
    expect(parseProxyJump('bastion/')).toBe('"bastion/" is not [user@]host[:port]');
  });

  it('refuses what ssh would read as an option, or a shell would expand', () => {
    expect(parseProxyJump('-oProxyCommand=sh')).toBe('"-oProxyCommand=sh" is not [user@]host[:port]: "-oProxyCommand=sh" is not a host name or address');
    expect(parseProxyJump('-gw')).toBe('"-gw" is not [user@]host[:port]: a host name cannot start with "-"');
    expect(parseProxyJump('-o@gw')).toBe('"-o@gw" is not [user@]host[:port]: "-o" is not a user name: a login name is letters, digits, "_", ".", "@" or "-", not starting with "-" (a trailing "$" allowed), at most 256 characters');
    expect(parseProxyJump('a;b@gw')).toBe('"a;b@gw" is not [user@]host[:port]: "a;b" is not a user name: a login name is letters, digits, "_", ".", "@" or "-", not starting with "-" (a trailing "$" allowed), at most 256 characters');
    expect(parseProxyJump('ops$(id)@gw')).toMatch(/is not a user name/);
  });

  it('digits and dots must be an IPv4 address', () => {
    expect(parseProxyJump('10.0.0.256')).toBe(
      '"10.0.0.256" is not an IPv4 address (256 is above 255), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
    );
    expect(parseProxyJump('ops@10.0.0')).toBe(
      '"ops@10.0.0" is not [user@]host[:port]: "10.0.0" is not an IPv4 address (it has 3 numbers, not 4), and digits and dots are never a host name: write four numbers from 0 to 255, like 10.0.0.1',
    );
  });

  it('formats a hop back, brackets and a non-default port included', () => {
    expect(formatHop({ user: 'ops', host: 'fd00::9', port: 2222 })).toBe('ops@[fd00::9]:2222');
    expect(formatHop({ host: 'gw', port: 22 })).toBe('gw');
  });
});
