/**
 * The cluster's view of its control plane, the pure parts: the `kubernetes` Service's EndpointSlices
 * and Endpoints as kube-apiserver writes them, and their drift from the inventory's masters.
 */
import { describe, expect, it } from 'vitest';
import { controlPlaneDrift, describeDrift, fromEndpoints, fromEndpointSlices } from '../../src/cluster/control-plane.js';

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
    expect(fromEndpointSlices({ items: [{ addressType: 'IPv6', endpoints: [{ addresses: ['fd00::1'] }], ports: [{ name: 'https', port: 443 }] }, { endpoints: [{ addresses: ['10.9.9.9'] }] }] })).toEqual([
      { address: 'fd00::1', port: 443, ready: true },
    ]);
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
