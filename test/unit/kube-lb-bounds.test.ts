/**
 * kube-lb --check-config refuses every setting that would flood the apiservers, crash it at start or
 * on SIGHUP, or make every check throw: each out-of-range field is named with its range.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/proxy/main.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kube-lb-bounds-'));

/** `kube-lb --check-config` on a config with these settings: its exit code and what it wrote to stderr. */
async function checkConfig(settings: Record<string, unknown>): Promise<{ code: number; stderr: string }> {
  const file = path.join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  const config = { backends: [{ name: 'm1', address: '192.0.2.11', port: 6443 }], ...settings, active: { insecureSkipVerify: true, ...(settings.active as object | undefined) } };
  fs.writeFileSync(file, JSON.stringify(config));
  let stderr = '';
  const write = process.stderr.write.bind(process.stderr);
  const out = process.stdout.write.bind(process.stdout);
  process.stderr.write = ((s: string) => ((stderr += s), true)) as typeof process.stderr.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    const code = await main(['--check-config', file]);
    return { code, stderr: stderr.replace(`${file}: `, '') };
  } finally {
    process.stderr.write = write;
    process.stdout.write = out;
  }
}

describe('kube-lb --check-config bounds', () => {
  it.each([
    [{ active: { interval: '0s' } }, 'active.interval: must be from 100ms to 1h'],
    [{ active: { interval: '25d' } }, 'active.interval: must be a duration like 500ms, 2s, 10m or 1h30m'],
    [{ active: { interval: '600h' } }, 'active.interval: must be from 100ms to 1h'],
    [{ active: { fastInterval: '10ms' } }, 'active.fastInterval: must be from 100ms to 1h'],
    [{ active: { timeout: '10m' } }, 'active.timeout: must be from 100ms to 1m'],
    [{ active: { rise: 0 } }, 'active.rise: must be from 1 to 100'],
    [{ active: { fall: 1000 } }, 'active.fall: must be from 1 to 100'],
    [{ active: { path: '/ready z' } }, 'active.path: must be a request path: a / then printable characters, no spaces (e.g. /readyz)'],
    [{ connectTimeout: '0s' }, 'connectTimeout: must be from 100ms to 75s'],
    [{ idleTimeout: '48h' }, 'idleTimeout: must be from 1s to 24h'],
    [{ passive: { maxFails: -1 } }, 'passive.maxFails: must be from 0 to 1000'],
    [{ passive: { failTimeout: '2h' } }, 'passive.failTimeout: must be from 1s to 1h'],
    [{ drainTimeout: '2h' }, 'drainTimeout: must be from 0s to 1h'],
    [{ shutdownTimeout: '2h' }, 'shutdownTimeout: must be from 0s to 1h'],
    [{ listenWait: '1h' }, 'listenWait: must be from 0s to 10m'],
    [{ listen: '127.0.0.1:0' }, 'listen: must be ADDRESS:PORT with a port from 1 to 65535 (an IPv6 address in brackets)'],
    [{ admin: '127.0.0.1:99999' }, 'admin: must be ADDRESS:PORT with a port from 1 to 65535 (an IPv6 address in brackets)'],
    [{ backends: [{ name: 'm1', address: '192.0.2.11', port: 0 }] }, 'backends.0.port: must be from 1 to 65535'],
  ])('%j is refused: %s', async (settings, message) => {
    const r = await checkConfig(settings);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`kube-lb: ${message}\n`);
  });

  it('takes the bounds themselves', async () => {
    const r = await checkConfig({ connectTimeout: '75s', idleTimeout: '24h', listenWait: '0s', drainTimeout: '1h', active: { interval: '100ms', fastInterval: '1h', timeout: '1m', rise: 100, fall: 1, path: '/readyz?verbose=1' } });
    expect(r).toEqual({ code: 0, stderr: '' });
  });
});

describe('the inventory feeding kube-lb', () => {
  it('refuses a check path kube-lb would refuse, before any node is touched', async () => {
    const { parseInventory } = await import('../../src/inventory/load.js');
    const { formatDiagnostic } = await import('../../src/inventory/diagnostics.js');
    const text = 'masters: [{ name: m1, address: 10.0.0.11 }]\nnodes: [{ name: n1, address: 10.0.0.21 }]\nlb: { impl: kube-lb }\ntls: { caFile: ca.crt }\nkubeLb: { check: { path: "/ready z" } }\n';
    expect(parseInventory(text).diagnostics.map((d) => formatDiagnostic('inv.yaml', d))).toEqual([
      'inv.yaml:5:26: kubeLb.check.path: must be a request path: a / then printable characters, no spaces (e.g. /readyz)',
    ]);
  });
});

describe("kube-lb's unit", () => {
  it('runs kube-lb as its own user with no capability, and grants the one to bind a port below 1024 only when it listens on one', async () => {
    const { parseInventory } = await import('../../src/inventory/load.js');
    const { renderKubeLbUnit } = await import('../../src/lb/kube-lb.js');
    const inv = (listen: string) =>
      parseInventory(`masters: [{ name: m1, address: 10.0.0.11 }]\nnodes: [{ name: n1, address: 10.0.0.21 }]\nlb: { impl: kube-lb, listen: "${listen}" }\ntls: { caFile: ca.crt }\n`).inventory!;
    const high = renderKubeLbUnit(inv('127.0.0.1:8443'));
    expect(high).toMatch(/^User=kube-lb$/m);
    expect(high).toMatch(/^CapabilityBoundingSet=$/m);
    expect(high).not.toMatch(/AmbientCapabilities/);
    for (const d of ['NoNewPrivileges=true', 'ProtectSystem=strict', 'ProtectHome=true', 'PrivateTmp=true']) expect(high).toContain(`\n${d}\n`);
    const low = renderKubeLbUnit(inv('127.0.0.1:443'));
    expect(low).toMatch(/^AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE$/m);
  });

  it('is started only once kube-lb is ready, and its descriptor limit fits kubeLb.maxConnections', async () => {
    const { parseInventory } = await import('../../src/inventory/load.js');
    const { renderKubeLbUnit } = await import('../../src/lb/kube-lb.js');
    const inv = (kubeLb: string) =>
      parseInventory(`masters: [{ name: m1, address: 10.0.0.11 }]\nnodes: [{ name: n1, address: 10.0.0.21 }]\nlb: { impl: kube-lb }\ntls: { caFile: ca.crt }\nkubeLb: ${kubeLb}\n`);
    const unit = renderKubeLbUnit(inv('{}').inventory!);
    expect(unit).toContain('\nExecStartPost=/opt/k8s/kube-lb/sbin/kube-lb --wait-ready /opt/k8s/kube-lb/conf/kube-lb.yaml ${MAINPID}\n');
    // 10 s for the port, a 1 s interval +20% and a 700 ms check, and a margin beyond kube-lb's own wait.
    expect(unit).toMatch(/^TimeoutStartSec=27$/m);
    expect(unit).toMatch(/^LimitNOFILE=16640$/m);
    expect(renderKubeLbUnit(inv('{ maxConnections: 100000 }').inventory!)).toMatch(/^LimitNOFILE=200256$/m);
    const { formatDiagnostic } = await import('../../src/inventory/diagnostics.js');
    expect(inv('{ maxConnections: 0 }').diagnostics.map((d) => formatDiagnostic('inv.yaml', d))).toEqual(['inv.yaml:5:27: kubeLb.maxConnections: must be from 1 to 500000']);
  });
});

describe('verify: whose port', () => {
  it('names the other process that holds the port, and nothing when the unit holds it', async () => {
    const { portOwnerProblem, portOwnerScript } = await import('../../src/engine/verify.js');
    expect(portOwnerProblem('@@owner other 4242 nginx\n', 'kube-lb', '127.0.0.1:8443')).toBe(
      '127.0.0.1:8443 is held by another process (pid 4242, nginx), not by kube-lb: it cannot take the port while that runs',
    );
    expect(portOwnerProblem('@@owner ours\n', 'kube-lb', '127.0.0.1:8443')).toBeUndefined();
    expect(portOwnerProblem('@@owner unknown\n', 'kube-lb', '127.0.0.1:8443')).toBeUndefined();
    // Only listeners on this address or on every address count: a VIP host's haproxy on 10.0.1.11:8443 is not in the way.
    expect(portOwnerScript('kube-lb', '127.0.0.1:8443')).toContain('awk -v a=127.0.0.1:8443 -v any=0 -v p=8443');
  });
});
