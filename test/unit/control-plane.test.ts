/**
 * The cluster's view of its control plane, the pure parts: the `kubernetes` Service's EndpointSlices
 * and Endpoints as kube-apiserver writes them, and their drift from the inventory's masters.
 */
import { describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { controlPlaneDrift, describeDrift, fromEndpoints, fromEndpointSlices } from '../../src/cluster/control-plane.js';
import { credentialsOf } from '../../src/cluster/kubeconfig-client.js';
import { UsageError } from '../../src/errors.js';

// As `kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o json` prints them.
const slices = {
  kind: 'EndpointSliceList',
  apiVersion: 'discovery.k8s.io/v1',
  metadata: { resourceVersion: '812' },
  items: [
    {
      metadata: { name: 'kubernetes', namespace: 'default', labels: { 'kubernetes.io/service-name': 'kubernetes' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: true } }, { addresses: ['10.0.0.2'] }, { addresses: ['10.0.0.4'], conditions: { ready: false } }],
      ports: [{ name: 'https', port: 6443, protocol: 'TCP' }],
    },
  ],
};

describe("the cluster's apiservers", () => {
  it('from EndpointSlices: every address at the https port; a missing ready condition is ready, as the API defines it', () => {
    expect(fromEndpointSlices(slices)).toEqual([
      { address: '10.0.0.1', port: 6443, ready: true },
      { address: '10.0.0.2', port: 6443, ready: true },
      { address: '10.0.0.4', port: 6443, ready: false },
    ]);
    // IPv6 and a slice without ports (nothing to dial) alike.
    expect(fromEndpointSlices({ items: [{ metadata: { name: 'kubernetes' }, addressType: 'IPv6', endpoints: [{ addresses: ['fd00::1'] }], ports: [{ name: 'https', port: 443 }] }, { metadata: { name: 'kubernetes' }, endpoints: [{ addresses: ['10.9.9.9'] }] }] })).toEqual([
      { address: 'fd00::1', port: 443, ready: true },
    ]);
    // Only the slice kube-apiserver writes: another with the same label (anyone who may write endpointslices in default) is not taken.
    expect(fromEndpointSlices({ items: [{ ...slices.items[0], metadata: { name: 'kubernetes-evil', labels: { 'kubernetes.io/service-name': 'kubernetes' } }, endpoints: [{ addresses: ['10.6.6.6'] }] }] })).toEqual([]);
    expect(fromEndpointSlices({ items: [] })).toEqual([]);
    expect(fromEndpointSlices('garbage')).toEqual([]);
  });

  it('from the Endpoints object (clusters without EndpointSlices): addresses ready, notReadyAddresses not', () => {
    const ep = { kind: 'Endpoints', subsets: [{ addresses: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }], notReadyAddresses: [{ ip: '10.0.0.3' }], ports: [{ name: 'https', port: 6443, protocol: 'TCP' }] }] };
    expect(fromEndpoints(ep)).toEqual([
      { address: '10.0.0.1', port: 6443, ready: true },
      { address: '10.0.0.2', port: 6443, ready: true },
      { address: '10.0.0.3', port: 6443, ready: false },
    ]);
    expect(fromEndpoints({ subsets: [] })).toEqual([]);
  });

  it('drift from the inventory: which masters the cluster does not name, which apiservers the inventory does not list, in words', () => {
    const masters = [
      { address: '10.0.0.1', port: 6443 },
      { address: '10.0.0.2', port: 6443 },
      { address: '10.0.0.3', port: 6443 },
    ];
    const d = controlPlaneDrift(masters, fromEndpointSlices(slices));
    expect(d).toEqual({
      inventory: ['10.0.0.1:6443', '10.0.0.2:6443', '10.0.0.3:6443'],
      cluster: ['10.0.0.1:6443', '10.0.0.2:6443', '10.0.0.4:6443'],
      notInCluster: ['10.0.0.3:6443'],
      notInInventory: ['10.0.0.4:6443'],
    });
    expect(describeDrift(d)).toBe(
      "the cluster's control plane is 10.0.0.1:6443, 10.0.0.2:6443, 10.0.0.4:6443; the inventory names 10.0.0.1:6443, 10.0.0.2:6443, 10.0.0.3:6443 (10.0.0.3:6443 is not in the cluster, 10.0.0.4:6443 is not in the inventory)",
    );
    const same = controlPlaneDrift(masters.slice(0, 2), fromEndpoints({ subsets: [{ addresses: [{ ip: '10.0.0.2' }, { ip: '10.0.0.1' }], ports: [{ port: 6443 }] }] }));
    expect(same.notInCluster).toEqual([]);
    expect(same.notInInventory).toEqual([]);
    expect(describeDrift(same)).toBe("the cluster's control plane is the inventory's: 10.0.0.1:6443, 10.0.0.2:6443");
    // Another port is another apiserver: the inventory's 6443 is not the cluster's 443.
    expect(controlPlaneDrift([{ address: 'fd00::1', port: 6443 }], [{ address: 'fd00::1', port: 443, ready: true }])).toMatchObject({ notInCluster: ['[fd00::1]:6443'], notInInventory: ['[fd00::1]:443'] });
  });
});

describe('the kubeconfig k8s-ha asks the cluster with', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const kc = (user: Record<string, unknown>, cluster: Record<string, unknown> = { server: 'https://127.0.0.1:8443', 'certificate-authority-data': b64('CA PEM') }) =>
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'kube-proxy@lab',
      contexts: [{ name: 'kube-proxy@lab', context: { cluster: 'lab', user: 'kube-proxy' } }],
      clusters: [{ name: 'lab', cluster }],
      users: [{ name: 'kube-proxy', user }],
    });
  const files: Record<string, string> = { '/etc/kubernetes/pki/ca.crt': 'CA FROM FILE', '/etc/kubernetes/kp.crt': 'CERT FROM FILE', '/etc/kubernetes/kp.key': 'KEY FROM FILE', '/etc/kubernetes/token': 'tok-en\n' };
  const read = (p: string) => {
    if (p in files) return files[p]!;
    throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  };
  const at = '/etc/kubernetes/kube-proxy.conf';

  it('inline or from files beside it (relative to its folder), as kubectl reads it; the server is kept, not dialed', () => {
    expect(credentialsOf(kc({ 'client-certificate-data': b64('CERT'), 'client-key-data': b64('KEY') }), at, read)).toEqual({ file: at, server: 'https://127.0.0.1:8443', ca: 'CA PEM', cert: 'CERT', key: 'KEY' });
    expect(credentialsOf(kc({ 'client-certificate': 'kp.crt', 'client-key': '/etc/kubernetes/kp.key' }, { server: 'https://x:6443', 'certificate-authority': 'pki/ca.crt', 'tls-server-name': 'kubernetes' }), at, read)).toEqual({
      file: at,
      server: 'https://x:6443',
      ca: 'CA FROM FILE',
      tlsServerName: 'kubernetes',
      cert: 'CERT FROM FILE',
      key: 'KEY FROM FILE',
    });
    expect(credentialsOf(kc({ tokenFile: 'token' }), at, read)).toMatchObject({ token: 'tok-en' });
  });

  it('what it cannot use is refused naming the file, the path and the fix (exit 2), never a stack', () => {
    const refused = (text: string) => {
      try {
        credentialsOf(text, at, read);
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return `${(e as UsageError).message} | ${(e as UsageError).hint}`;
      }
      throw new Error('not refused');
    };
    expect(refused(kc({ exec: { command: 'aws' } }))).toBe(`${at}: users[kube-proxy]: uses an exec plugin, which k8s-ha does not run | use a kubeconfig with a client certificate or a token (e.g. the node's kube-proxy kubeconfig)`);
    expect(refused(kc({}))).toMatch(/users\[kube-proxy\]: has no client certificate and no token \| /);
    expect(refused(kc({ 'client-key-data': b64('KEY') }))).toMatch(/has a client key without its certificate/);
    expect(refused(kc({ token: 't' }, { server: 'https://x', 'insecure-skip-tls-verify': true }))).toMatch(/clusters\[lab\]\.insecure-skip-tls-verify: is true/);
    expect(refused(kc({ 'client-certificate': 'missing.crt', 'client-key': 'kp.key' }))).toMatch(/users\[kube-proxy\]\.client-certificate: cannot read \/etc\/kubernetes\/missing\.crt \(ENOENT\)/);
    expect(refused('current-context: nope\ncontexts: []\n')).toMatch(/contexts: has no context named nope/);
    expect(refused(': : :')).toMatch(/not YAML/);
  });
});
