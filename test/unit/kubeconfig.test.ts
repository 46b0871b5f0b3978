import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseFacts } from '../../src/facts/host.js';
import { ORIGINAL_SUFFIX, planRepoint, repointScript, serversIn } from '../../src/ops/kubeconfig.js';
import { run } from '../../src/util/exec.js';

const KUBECONFIG = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://192.0.2.11:6443
  name: kubernetes
contexts:
- context: { cluster: kubernetes, user: system:node:node-1 }
  name: default
current-context: default
`;

function facts(texts: Record<string, string>, kubelet: 'loaded' | 'not-found') {
  const f = parseFacts({ files: [], dirs: [], units: [], guards: [] }, '');
  f.texts = texts;
  f.units['kubelet.service'] = { loadState: kubelet, activeState: 'active', subState: 'running', unitFileState: 'enabled', activeEnterTimestamp: '', mainPid: 1 };
  f.units['kube-proxy.service'] = { loadState: 'not-found', activeState: 'inactive', subState: 'dead', unitFileState: '', activeEnterTimestamp: '', mainPid: 0 };
  return f;
}

const kcs = [
  { path: '/etc/kubernetes/kubelet.kubeconfig', service: 'kubelet' },
  { path: '/etc/kubernetes/kube-proxy.kubeconfig', service: 'kube-proxy' },
];

describe('repointing kubeconfigs', () => {
  it('plans a rewrite of a kubeconfig that names an apiserver, restarting the service only where it exists', () => {
    expect(planRepoint(kcs, '127.0.0.1:8443', facts({ '/etc/kubernetes/kubelet.kubeconfig': KUBECONFIG }, 'loaded'))).toEqual([
      { path: '/etc/kubernetes/kubelet.kubeconfig', from: 'https://192.0.2.11:6443', to: 'https://127.0.0.1:8443', service: 'kubelet' },
    ]);
    expect(planRepoint(kcs, '127.0.0.1:8443', facts({ '/etc/kubernetes/kubelet.kubeconfig': KUBECONFIG }, 'not-found'))[0]!.service).toBeUndefined();
  });

  it('plans nothing for a kubeconfig already pointing at the balancer, or a missing one', () => {
    const done = KUBECONFIG.replace('https://192.0.2.11:6443', 'https://127.0.0.1:8443');
    expect(planRepoint(kcs, '127.0.0.1:8443', facts({ '/etc/kubernetes/kubelet.kubeconfig': done }, 'loaded'))).toEqual([]);
    expect(planRepoint(kcs, '127.0.0.1:8443', facts({}, 'loaded'))).toEqual([]);
  });

  it('rewrites the server line in place, keeps the original once, and leaves the rest untouched', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-kc-'));
    const file = path.join(dir, 'kubelet.kubeconfig');
    fs.writeFileSync(file, KUBECONFIG, { mode: 0o600 });
    const script = repointScript([{ path: file, from: 'https://192.0.2.11:6443', to: 'https://127.0.0.1:8443' }]);
    expect((await run('sh', ['-c', script])).stdout).toBe('@@repointed\n');
    const after = fs.readFileSync(file, 'utf8');
    expect(serversIn(after)).toEqual(['https://127.0.0.1:8443']);
    expect(after).toBe(KUBECONFIG.replace('server: https://192.0.2.11:6443', 'server: https://127.0.0.1:8443'));
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600');
    expect(fs.readFileSync(file + ORIGINAL_SUFFIX, 'utf8')).toBe(KUBECONFIG);
    // A second rewrite never overwrites the original backup.
    await run('sh', ['-c', repointScript([{ path: file, from: 'x', to: 'https://127.0.0.1:9443' }])]);
    expect(fs.readFileSync(file + ORIGINAL_SUFFIX, 'utf8')).toBe(KUBECONFIG);
    expect(fs.readdirSync(dir).sort()).toEqual(['kubelet.kubeconfig', `kubelet.kubeconfig${ORIGINAL_SUFFIX}`]);
    fs.rmSync(dir, { recursive: true });
  });
});
