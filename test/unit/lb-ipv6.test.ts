/** IPv6 end to end in what k8s-ha writes to a node: nginx's config, kube-lb's config and unit, kubeconfig URLs. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseInventory, resolvePaths } from '../../src/inventory/load.js';
import { renderKubeLbConf, renderKubeLbUnit } from '../../src/lb/kube-lb.js';
import { renderNginxConf } from '../../src/lb/nginx.js';
import { procNetAddresses, serverUrl } from '../../src/ops/kubeconfig.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';

const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-ipv6-'));
fs.writeFileSync(path.join(dir, 'ca.crt'), CA);

const inv = (kubeLb = '') => {
  const { inventory, diagnostics } = parseInventory(`
masters:
  - { name: master-1, address: "fd00:10::11" }
  - { name: master-2, address: 192.0.2.12, port: 6444 }
  - { name: master-3, address: "::ffff:192.0.2.13" }
nodes: [{ name: n1, address: "fd00:10::21" }]
lb: { impl: auto, listen: "[::1]:8443" }
kubeLb: { admin: "[::1]:8444"${kubeLb} }
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
tls: { caFile: ca.crt }
`);
  expect(diagnostics).toEqual([]);
  return resolvePaths(inventory!, dir);
};

describe('an IPv6 master and listener', () => {
  it('kube-nginx.conf writes every IPv6 address in brackets, as nginx reads it', () => {
    const conf = renderNginxConf(inv());
    expect(conf).toContain(
      [
        '    upstream kube_apiserver {',
        '        least_conn;',
        '        server [fd00:10::11]:6443 max_fails=3 fail_timeout=30s; # master-1',
        '        server 192.0.2.12:6444 max_fails=3 fail_timeout=30s; # master-2',
        '        server [::ffff:192.0.2.13]:6443 max_fails=3 fail_timeout=30s; # master-3',
        '    }',
      ].join('\n'),
    );
    expect(conf).toContain('        listen [::1]:8443;\n');
  });

  it("kube-lb.yaml: listen and admin in brackets, backends as address and port, accepted by kube-lb's own schema", () => {
    const text = renderKubeLbConf(inv());
    expect(text).toContain('listen: "[::1]:8443"\nadmin: "[::1]:8444"\n');
    expect(text).toContain('  - name: master-1\n    address: fd00:10::11\n    port: 6443\n');
    const cfg = proxyConfigSchema.parse(YAML.parse(text));
    expect(cfg.listen).toBe('[::1]:8443');
    expect(cfg.admin).toBe('[::1]:8444');
    expect(cfg.backends).toEqual([
      { name: 'master-1', address: 'fd00:10::11', port: 6443 },
      { name: 'master-2', address: '192.0.2.12', port: 6444 },
      { name: 'master-3', address: '::ffff:192.0.2.13', port: 6443 },
    ]);
  });

  it('kubeconfigs point at https://[::1]:8443, and the connection is looked for in /proc/net/tcp6', () => {
    expect(serverUrl(inv().lb.listen)).toBe('https://[::1]:8443');
    expect(procNetAddresses('[::1]:8443')).toContain('00000000000000000000000001000000:20FB');
  });
});

describe('kube-lb.service', () => {
  it('gives kube-lb its shutdownTimeout before systemd kills it (30 s at least, as before)', () => {
    expect(renderKubeLbUnit(inv())).toContain('\nTimeoutStopSec=30\n');
    expect(renderKubeLbUnit(inv(', shutdownTimeout: 20s'))).toContain('\nTimeoutStopSec=30\n');
    expect(renderKubeLbUnit(inv(', shutdownTimeout: 5m'))).toContain('\nTimeoutStopSec=310\n');
  });
});
