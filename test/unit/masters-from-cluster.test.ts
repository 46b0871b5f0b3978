/** deploy --masters-from-cluster's list and its refusals, from plain data. */
import { describe, expect, it } from 'vitest';
import { defaultFloor, masterName, mastersFromCluster } from '../../src/cluster/masters.js';
import { UsageError } from '../../src/errors.js';

const inv = [
  { name: 'cp1', address: '10.0.0.1', port: 6443 },
  { name: 'cp2', address: '10.0.0.2', port: 6443 },
  { name: 'cp3', address: 'cp3.example', port: 6443, ssh: { user: 'admin' } },
];
const up = (...a: string[]) => a.map((x) => ({ address: x.split(':')[0]!, port: Number(x.split(':')[1] ?? 6443), ready: true }));
const refusal = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return `${(e as UsageError).message} | ${(e as UsageError).hint}`;
  }
  throw new Error('not refused');
};

describe('masters from the cluster', () => {
  it('keeps the inventory entries the cluster names (by address, or by what a host name resolves to), adds the others, drops the rest', () => {
    const r = mastersFromCluster(inv, up('10.0.0.1', '10.0.0.3', '10.0.0.4'), { resolved: new Map([['cp3.example', ['10.0.0.3']]]) });
    expect(r.masters).toEqual([inv[0], inv[2], { name: 'apiserver-10-0-0-4', address: '10.0.0.4', port: 6443 }]);
    expect([r.kept, r.added, r.removed, r.floor]).toEqual([['10.0.0.1:6443', 'cp3.example:6443'], ['10.0.0.4:6443'], ['10.0.0.2:6443'], 2]);
  });

  it('the same list: nothing added or removed', () => {
    const r = mastersFromCluster(inv.slice(0, 2), up('10.0.0.2', '10.0.0.1'));
    expect([r.added, r.removed]).toEqual([[], []]);
  });

  it('leaves out apiservers the cluster says are not ready', () => {
    const r = mastersFromCluster(inv.slice(0, 2), [...up('10.0.0.1', '10.0.0.2'), { address: '10.0.0.9', port: 6443, ready: false }]);
    expect(r.added).toEqual([]);
  });

  it('refuses an empty answer, a disjoint one, one below the floor, and one dropping a VIP host', () => {
    expect(refusal(() => mastersFromCluster(inv, []))).toMatch(/the cluster names no ready apiserver: there would be nothing to balance to \| nothing was changed/);
    expect(refusal(() => mastersFromCluster(inv, up('10.9.0.1', '10.9.0.2', '10.9.0.3')))).toMatch(
      /the cluster names 10\.9\.0\.1:6443, 10\.9\.0\.2:6443, 10\.9\.0\.3:6443, none of the inventory's masters \(10\.0\.0\.1:6443, 10\.0\.0\.2:6443, cp3\.example:6443\).*\| is the kubeconfig this cluster's/,
    );
    expect(refusal(() => mastersFromCluster(inv, up('10.0.0.1')))).toMatch(/1 apiserver, fewer than the floor of 2 \(a majority of the inventory's 3\) \| .*--min-masters 1/);
    expect(mastersFromCluster(inv, up('10.0.0.1'), { minMasters: 1 }).masters).toEqual([inv[0]]);
    expect(refusal(() => mastersFromCluster(inv, up('10.0.0.1', '10.0.0.4'), { vipHosts: ['cp2'] }))).toMatch(/vip.hosts names cp2, which the cluster no longer names/);
  });

  it('checks what the cluster names as an inventory master is checked', () => {
    expect(refusal(() => mastersFromCluster(inv, up('10.0.0.1', '10.0.0.2', '0.0.0.0')))).toMatch(/names 0\.0\.0\.0:6443, which is no master address k8s-ha can use/);
  });

  it('floor: a majority; names: from the address', () => {
    expect([1, 2, 3, 4, 5].map(defaultFloor)).toEqual([1, 2, 2, 3, 3]);
    expect(masterName('fd00:10::4')).toBe('apiserver-fd00-10-4');
  });
});
