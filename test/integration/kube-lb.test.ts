/**
 * The kube-lb single executable on a lab node that has no Node.js and no
 * compiler: it checks its config, runs under systemd, and carries TLS to the
 * apiservers with active /readyz checks. (Deploying it with lb.impl comes next.)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { httpsGet } from '../../src/connect/https-probe.js';
import { ROOT } from '../helpers/cli.js';
import { lab, withNode } from '../helpers/lab.js';

const EXE = path.join(ROOT, 'dist', 'kube-lb', 'kube-lb');
const DIR = '/opt/k8s/kube-lb-test';

beforeAll(() => {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-kube-lb.js')], { stdio: 'ignore' });
}, 120_000);

describe('the kube-lb executable on a node', () => {
  it('runs with no Node.js on the host, checks its config, and carries TLS to an apiserver with health checks', async () => {
    const node = lab().nodes[2]!;
    await withNode(node, async (c) => {
      expect((await c.exec('command -v node nodejs gcc')).code).not.toBe(0);
      await c.execOk(`install -d ${DIR}/sbin ${DIR}/conf && cat > ${DIR}/sbin/kube-lb.new && chmod 0755 ${DIR}/sbin/kube-lb.new && mv ${DIR}/sbin/kube-lb.new ${DIR}/sbin/kube-lb`, {
        input: fs.createReadStream(EXE),
      });
      await c.execOk(`cat > ${DIR}/conf/ca.crt`, { input: lab().caPem });
      const config = [
        'listen: 127.0.0.1:9443',
        'admin: 127.0.0.1:9444',
        'backends:',
        ...lab().masters.map((m) => `  - { name: ${m.name}, address: ${m.address}, port: ${m.port} }`),
        `active: { interval: 500ms, caFile: ${DIR}/conf/ca.crt, serverName: kubernetes }`,
      ].join('\n');
      await c.execOk(`cat > ${DIR}/conf/kube-lb.yaml`, { input: config + '\n' });
      expect(await c.execOk(`${DIR}/sbin/kube-lb --version`)).toBe('kube-lb 0.1.0\n');
      expect(await c.execOk(`${DIR}/sbin/kube-lb --check-config ${DIR}/conf/kube-lb.yaml`)).toMatch(/: ok \(\d+ backends, listen 127\.0\.0\.1:9443\)/);
      const bad = await c.exec(`printf 'backends: []\\n' > /tmp/bad.yaml; ${DIR}/sbin/kube-lb --check-config /tmp/bad.yaml`);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/backends: needs at least one backend/);

      await c.execOk(`systemd-run --unit kube-lb-test --collect ${DIR}/sbin/kube-lb --config ${DIR}/conf/kube-lb.yaml`);
      try {
        // Backends start down until their first good /readyz: wait for the admin /healthz.
        const healthz = () =>
          new Promise<number>((resolve) => {
            c.connectFromHost('127.0.0.1', 9444).then(
              (s) => {
                const req = http.request({ createConnection: () => s as never, path: '/healthz' }, (res) => {
                  res.resume();
                  resolve(res.statusCode ?? 0);
                });
                req.on('error', () => resolve(0));
                req.end();
              },
              () => resolve(0),
            );
          });
        let code = 0;
        for (let i = 0; i < 50 && code !== 200; i++) {
          code = await healthz();
          if (code !== 200) await new Promise((r) => setTimeout(r, 200));
        }
        expect(code).toBe(200);
        const seen = new Set<string>();
        for (let i = 0; i < 6; i++) {
          const r = await httpsGet(() => c.connectFromHost('127.0.0.1', 9443), { path: '/version', ca: lab().caPem, servername: 'kubernetes' });
          expect(r.status).toBe(200);
          seen.add(JSON.parse(r.body).standin);
        }
        expect(seen.size).toBeGreaterThan(1);
        const journal = await c.execOk('journalctl -u kube-lb-test --no-pager -o cat');
        expect(journal).toMatch(/kube-lb 0\.1\.0: listening on 127\.0\.0\.1:9443/);
        expect(journal).toMatch(/backend master-1 .* is UP: its health check passes/);
      } finally {
        await c.exec(`systemctl stop kube-lb-test; rm -rf ${DIR} /tmp/bad.yaml`);
      }
    });
  });
});
