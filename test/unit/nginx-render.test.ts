import { describe, expect, it } from 'vitest';
import { parseInventory } from '../../src/inventory/load.js';
import { renderNginxConf, renderNginxUnit } from '../../src/lb/nginx.js';

const inv = (lb = '') =>
  parseInventory(`
masters:
  - { name: master-1, address: 192.0.2.11 }
  - { name: master-2, address: 192.0.2.12, port: 6444 }
nodes: [{ name: n1, address: 192.0.2.21 }]
${lb}
nginx: { version: 1.22.1, sources: [http://x.invalid/n.tar.gz], sha256: ${'a'.repeat(64)} }
`).inventory!;

describe('kube-nginx.conf', () => {
  it('lists every master with passive health settings, least_conn by default, and the timeouts', () => {
    const conf = renderNginxConf(inv());
    expect(conf).toContain(
      [
        '    upstream kube_apiserver {',
        '        least_conn;',
        '        server 192.0.2.11:6443 max_fails=3 fail_timeout=30s; # master-1',
        '        server 192.0.2.12:6444 max_fails=3 fail_timeout=30s; # master-2',
        '    }',
      ].join('\n'),
    );
    expect(conf).toContain('listen 127.0.0.1:8443;');
    expect(conf).toContain('proxy_connect_timeout 1s;');
    expect(conf).toContain('proxy_timeout 10m;');
    expect(conf).toContain('worker_shutdown_timeout 10s;');
    expect(conf).toContain('pid /opt/k8s/kube-nginx/logs/kube-nginx.pid;');
  });

  it('round_robin is nginx default (no directive); hash keys on the client address', () => {
    expect(renderNginxConf(inv('lb: { balance: round_robin }'))).not.toMatch(/least_conn|hash/);
    expect(renderNginxConf(inv('lb: { balance: hash }'))).toContain('hash $remote_addr consistent;');
  });
});

describe('kube-nginx.service', () => {
  it('is the seed unit: forking, config test before start, reload by signal, always restarted', () => {
    const unit = renderNginxUnit(inv('lb: { prefix: /srv/kn }'));
    const cmd = '/srv/kn/sbin/kube-nginx -p /srv/kn -c /srv/kn/conf/kube-nginx.conf';
    for (const line of [
      'Type=forking',
      `ExecStartPre=${cmd} -t`,
      `ExecStart=${cmd}`,
      `ExecReload=${cmd} -s reload`,
      'Restart=always',
      'RestartSec=5',
      'LimitNOFILE=65536',
      'WantedBy=multi-user.target',
      'PIDFile=/srv/kn/logs/kube-nginx.pid',
      // systemd reads the PID file only once nginx has written it: no race with the forking parent's exit.
      `ExecStartPost=/bin/sh -c 'for i in $$(seq 500); do [ -s /srv/kn/logs/kube-nginx.pid ] && exit 0; sleep 0.01; done; echo "nginx wrote no PID file to /srv/kn/logs/kube-nginx.pid" >&2; exit 1'`,
    ]) {
      expect(unit.split('\n')).toContain(line);
    }
  });
});

describe("nginx's fail_timeout", () => {
  it('is whole seconds (nginx refuses ms there): milliseconds are rounded up, anything else is written as it is (compound too, which nginx reads)', async () => {
    const { wholeSeconds } = await import('../../src/lb/nginx.js');
    expect(['1500ms', '1s500ms', '1000ms', '30s', '1m30s', '1h'].map(wholeSeconds)).toEqual(['2s', '2s', '1s', '30s', '1m30s', '1h']);
  });
});
