/**
 * Every value written into nginx's, haproxy's, keepalived's or a unit's text is one plain word: the
 * renderers refuse anything a format would read as more (whitespace, a newline, a comment, a quote).
 */
import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/errors.js';
import { parseInventory } from '../../src/inventory/load.js';
import { vipHosts, type Inventory } from '../../src/inventory/schema.js';
import { configWord, type ConfigFormat } from '../../src/lb/config-words.js';
import { renderKubeHaproxyConf } from '../../src/lb/haproxy.js';
import { renderKubeLbUnit } from '../../src/lb/kube-lb.js';
import { renderNginxConf, renderNginxUnit } from '../../src/lb/nginx.js';
import { renderKeepalived, renderVipHaproxy } from '../../src/lb/vip.js';
import { hostFacts } from '../helpers/facts.js';

const base = (): Inventory =>
  parseInventory(`masters: [{ name: m1, address: 10.0.1.11 }, { name: m2, address: 10.0.1.12 }]
nodes: [{ name: n1, address: 10.0.2.21 }]
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
tls: { insecureSkipVerify: true, serverName: kubernetes }
vip: { address: 10.0.1.100, hosts: [m1, m2] }
`).inventory!;

describe('configWord', () => {
  const formats: ConfigFormat[] = ['nginx', 'haproxy', 'keepalived', 'systemd'];

  it('passes a plain word unchanged, in every format', () => {
    for (const f of formats) for (const v of ['kubernetes', '10.0.1.11:6443', '[fd00::1]:6443', '/opt/k8s/kube-nginx/logs/kube-nginx.pid', '30s', 3]) expect(configWord(f, v)).toBe(String(v));
  });

  it('refuses whitespace, a newline, comments, quotes, variables and syntax, in every format (exit 2)', () => {
    for (const f of formats) {
      for (const v of ['kubernetes verify none', 'a\nb', 'a\tb', 'a#b', 'a;b', 'a{b', 'a"b', "a'b", 'a$b', 'a\\b', 'a!b', '', 'a\rb']) {
        expect(() => configWord(f, v), `${f} ${JSON.stringify(v)}`).toThrow(/cannot be written into .*: it (holds|is empty)/);
      }
    }
    try {
      configWord('haproxy', 'x y');
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(ExitCode.usage);
      expect((e as Error).message).toBe('"x y" cannot be written into haproxy\'s config: it holds " ", and a value there must be one plain word');
    }
    // A specifier in a systemd unit.
    expect(() => configWord('systemd', '/opt/%h/x')).toThrow(/a systemd unit: it holds "%"/);
  });
});

describe('the renderers refuse what would add words or directives', () => {
  it("haproxy: a serverName with words after it, or a newline, never reaches check-sni", () => {
    for (const sni of ['kubernetes verify none', 'kubernetes\n    http-check send meth GET uri /x']) {
      const inv = base();
      inv.tls.serverName = sni;
      expect(() => renderKubeHaproxyConf(inv)).toThrow(/cannot be written into haproxy's config/);
      expect(() => renderVipHaproxy(inv, vipHosts(inv)[0]!)).toThrow(/cannot be written into haproxy's config/);
    }
    expect(renderKubeHaproxyConf(base())).toContain('check-sni kubernetes');
  });

  it('nginx: a master name with a newline would end its comment and add a directive', () => {
    const inv = base();
    inv.masters[0]!.name = 'm1\nerror_log /tmp/x';
    expect(() => renderNginxConf(inv)).toThrow(/cannot be written into nginx's config: it holds "\\n"/);
    const inv2 = base();
    inv2.lb.failTimeout = '30s max_conns=1';
    expect(() => renderNginxConf(inv2)).toThrow(/nginx's config: it holds " "/);
  });

  it('systemd units: a prefix with a space or a specifier', () => {
    const inv = base();
    inv.lb.prefix = '/opt/kube nginx';
    expect(() => renderNginxUnit(inv)).toThrow(/a systemd unit: it holds " "/);
    const inv2 = base();
    inv2.kubeLb.prefix = '/opt/%n';
    expect(() => renderKubeLbUnit(inv2)).toThrow(/a systemd unit: it holds "%"/);
  });

  it("keepalived: an interface name from a host's facts with a newline or a space", () => {
    const inv = base();
    const hosts = vipHosts(inv);
    for (const dev of ['eth0\n    notify_master /tmp/x', 'eth0 x']) {
      expect(() => renderKeepalived(inv, hosts[0]!, hostFacts({ interfaces: { '10.0.1.11': dev } }), hosts)).toThrow(/cannot be written into keepalived's config/);
    }
    expect(renderKeepalived(inv, hosts[0]!, hostFacts({ interfaces: { '10.0.1.11': 'eth0' } }), hosts)).toContain('interface eth0');
  });
});
