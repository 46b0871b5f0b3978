/**
 * `k8s-ha remove` on a hard-way worker of the shared lab (node-1): kubelet (a stand-in holding a
 * connection to what its kubeconfig names) and the lab's kube-proxy kubeconfig were pointed at
 * 127.0.0.1:8443 by `deploy --repoint-kubeconfigs`. remove must put them back where they were, see
 * kubelet connected there before the balancer's port closes, and leave nothing of k8s-ha behind;
 * it must refuse while a kubeconfig has nowhere to go or a client still uses the port, and a run
 * killed mid-way must be finished by the next. node-1 is left as the other files expect it: kube-nginx
 * deployed, its kubelet the lab's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { k8sha, startK8sha, type CliResult } from '../helpers/cli.js';
import { deployJson } from '../helpers/deploy.js';
import { fakeKubelet, KUBELET_CONNECTS, UNDO_FAKE_KUBELET } from '../helpers/kubelet.js';
import { lab, withNode } from '../helpers/lab.js';
import { NodeLoad, withLoad } from '../helpers/load.js';
import type { HostResult } from '../../src/engine/results.js';

type Exec = { execOk: (cmd: string) => Promise<string>; exec: (cmd: string) => Promise<{ code: number | null; stdout: string; stderr: string }> };

const n1 = () => lab().nodes[0]!;
const m1 = () => lab().masters[0]!;
const m2 = () => lab().masters[1]!;
const KUBELET = '/etc/kubernetes/kubelet.kubeconfig';
const PROXY = '/var/lib/kube-proxy/kubeconfig';
const LAB_PROXY = '/etc/k8s-ha-lab/host/kube-proxy.kubeconfig';

/** kubelet's kubeconfig as a hard-way install writes it: the first master, no tls-server-name, a key that never leaves the node. */
const kubeletConfig = () =>
  `apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EK\n    server: https://${m1().address}:6443\n  name: kubernetes\n` +
  `kind: Config\nusers:\n- name: kubelet\n  user:\n    client-key-data: U0VDUkVULUtFWS1NQVRFUklBTAo=\n`;

async function removeJson(args: string[]): Promise<CliResult & { report: { ok: boolean; hosts: Record<string, HostResult>; totals: Record<string, number>; durationMs: number } }> {
  const r = await k8sha(['remove', '-i', lab().inventory, '--json', ...args]);
  return { ...r, report: JSON.parse(r.stdout) };
}

const deployRepointed = async () => {
  const d = await deployJson(['-i', lab().inventory, '--limit', 'node-1', '--repoint-kubeconfigs']);
  expect(d.code, d.stderr).toBe(0);
};

/** Everything k8s-ha puts on a node running kube-nginx, each as a check that prints it when it is there. */
const LEFTOVERS = [
  'systemctl list-unit-files kube-nginx.service kube-lb.service kube-haproxy.service kube-nginx-container.service --no-legend 2>/dev/null',
  'ls -d /etc/systemd/system/kube-* /opt/k8s /etc/kube-nginx /var/lib/k8s-ha /etc/haproxy/kube-haproxy* /etc/kubernetes/manifests/kube-nginx.yaml 2>/dev/null',
  // The lock's folder (a tmpfs) keeps the lock file alone: removed under a run waiting for it, two could hold it.
  "ls -A /run/k8s-ha 2>/dev/null | grep -vxE 'lock|holder'",
  'getent passwd kube-nginx kube-lb',
  'getent group kube-nginx kube-lb',
  'ss -Htln src 127.0.0.1:8443',
  'pgrep -a kube-nginx',
  'podman images --noheading localhost/k8s-ha/kube-nginx 2>/dev/null',
  "find / -xdev \\( -name '*.k8s-ha-*' -o -name '*k8s-ha-prev*' -o -name '*k8s-ha-new*' \\) -not -path '/proc/*' 2>/dev/null",
];
const leftovers = (c: Exec) => c.execOk(LEFTOVERS.map((l) => `{ ${l}; true; }`).join('; '));

/** The server: and tls-server-name: lines of a kubeconfig, without their indentation. */
const servers = (c: Exec, file: string) => c.execOk(`grep -E '^ *(server|tls-server-name):' ${file} | sed 's/^ *//'`);

/** kubelet's established peers. */
const kubeletPeers = (c: Exec) => c.execOk(`for p in $(systemctl show -p MainPID --value kubelet); do ss -Htnp state established | grep "pid=$p," | awk '{print $4}'; done`);

describe.sequential('k8s-ha remove', () => {
  let labProxy = '';
  beforeAll(async () => {
    await fakeKubelet(n1(), kubeletConfig(), true);
    // A worker k8s-ha never repointed: kube-proxy's kubeconfig as the lab writes it (on 127.0.0.1:8443), no origins kept.
    labProxy = await withNode(n1(), (c) => c.execOk(`install -m 0600 ${LAB_PROXY} ${PROXY} && rm -f /var/lib/k8s-ha/kubeconfig-origins && cat ${PROXY}`));
    expect(labProxy).toContain('server: https://127.0.0.1:8443\n');
    await deployRepointed();
  });

  afterAll(async () => {
    await withNode(n1(), (c) => c.execOk(`${UNDO_FAKE_KUBELET}; install -m 0600 ${LAB_PROXY} ${PROXY}`));
    // node-1 as the other files expect it: kube-nginx deployed and serving.
    const d = await deployJson(['-i', lab().inventory, '--limit', 'node-1']);
    expect(d.code, d.stderr).toBe(0);
  });

  it('refuses a node whose kubeconfig names the balancer with nowhere to go back to: --check says so, and nothing on the node changes', async () => {
    await withNode(n1(), async (c) => expect(await servers(c, KUBELET)).toBe('server: https://127.0.0.1:8443\ntls-server-name: kubernetes\n'));
    const check = await k8sha(['remove', '-i', lab().inventory, '--limit', 'node-1', '--check']);
    expect(check.code, check.stderr).toBe(3);
    expect(check.stdout).toContain(
      `repoint kubeconfigs: ${PROXY} names the balancer (https://127.0.0.1:8443), and k8s-ha kept no record of where it pointed before: nothing is removed from this node, or its kubelet would be left on a port about to close`,
    );
    expect(check.stdout).toContain('stop balancer: nothing is removed: a kubeconfig has nowhere to go');
    expect(check.stdout).toContain('hint: give --repoint-to https://ADDRESS:PORT');

    const r = await removeJson(['--limit', 'node-1']);
    expect(r.code, r.stderr).toBe(3);
    expect(r.report.hosts['node-1']!.status).toBe('failed');
    await withNode(n1(), async (c) => {
      expect(await servers(c, KUBELET)).toBe('server: https://127.0.0.1:8443\ntls-server-name: kubernetes\n');
      expect((await c.execOk('systemctl is-active kube-nginx')).trim()).toBe('active');
      expect(await kubeletPeers(c)).toContain('127.0.0.1:8443');
    });
  });

  it('puts each kubeconfig back where it pointed, sees kubelet connected there before the port closes, and leaves nothing of k8s-ha: under load through the new server, with zero failures', async () => {
    // The operator had kube-proxy on master-2: the next repoint records that, as it records kubelet's master-1.
    // And the folder nginx's HTTP core makes in its prefix when nginx.statusListen is set (as other
    // files of this suite leave it, in whatever order they run): it must go too.
    await withNode(n1(), (c) => c.execOk(`sed -i 's#server: https://127.0.0.1:8443#server: https://${m2().address}:6443#' ${PROXY} && install -d -o kube-nginx /opt/k8s/kube-nginx/client_body_temp`));
    const proxyBefore = await withNode(n1(), (c) => c.execOk(`cat ${PROXY}`));
    await deployRepointed();
    await withNode(n1(), async (c) => {
      expect(await c.execOk('cat /var/lib/k8s-ha/kubeconfig-origins')).toBe(`${KUBELET}\thttps://${m1().address}:6443\t\n${PROXY}\thttps://${m2().address}:6443\tkubernetes\n`);
    });

    // A client still talking through 127.0.0.1:8443 (sshd, forwarding for the load below): the kubeconfigs
    // move back, but the balancer is not stopped, and the client is named.
    const stray = new NodeLoad(n1());
    await stray.start();
    let refused;
    try {
      refused = await removeJson(['--limit', 'node-1']);
    } finally {
      await stray.stop();
    }
    expect(refused.code, refused.stderr).toBe(3);
    const steps = refused.report.hosts['node-1']!.steps;
    expect(steps.map((s) => [s.name, s.status])).toEqual([
      ['repoint kubeconfigs', 'changed'],
      ['stop balancer', 'failed'],
      ['remove files', 'skipped'],
    ]);
    // sshd's per-connection process: `sshd` up to OpenSSH 9, `sshd-session` from OpenSSH 10 (Debian 13).
    expect(steps[1]!.summary).toMatch(/^still connected through 127\.0\.0\.1:8443: sshd(-session)? \(pid \d+(, [\w@.-]+)?\): nothing was stopped$/);
    expect(steps[0]!.summary).toBe(
      `${KUBELET}: server https://127.0.0.1:8443 -> https://${m1().address}:6443 (where it pointed before k8s-ha); tls-server-name kubernetes -> (none) (restart kubelet); ` +
        `kubelet active (running) and connected to the server it named before k8s-ha (${m1().address}:6443); ` +
        `${PROXY}: server https://127.0.0.1:8443 -> https://${m2().address}:6443 (where it pointed before k8s-ha)`,
    );
    expect(stray.report.failures).toEqual([]);
    await withNode(n1(), async (c) => expect((await c.execOk('systemctl is-active kube-nginx')).trim()).toBe('active'));

    // Again, with traffic from the node straight to master-1, where kubelet goes back to.
    const { result: r, reports } = await withLoad([n1()], () => removeJson(['--limit', 'node-1']), { host: m1().address, port: 6443 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toContain('U0VDUkVULUtFWS1NQVRFUklBTAo');
    const [load] = reports;
    expect(load!.failures).toEqual([]);
    // Traffic all along: at least 4 requests a second over the whole run.
    expect(load!.requests).toBeGreaterThanOrEqual(Math.floor(r.report.durationMs / 250));
    expect(load!.watch.error).toBeUndefined();
    const done = r.report.hosts['node-1']!.steps;
    // The first run moved the kubeconfigs already: this one only stops and removes.
    expect(done.map((s) => [s.name, s.status])).toEqual([
      ['repoint kubeconfigs', 'ok'],
      ['stop balancer', 'changed'],
      ['remove files', 'changed'],
    ]);
    expect(done[1]!.summary).toBe('stopped and disabled kube-nginx.service; 127.0.0.1:8443 closed');
    expect(done[2]!.summary).toContain('removed user kube-nginx');
    await withNode(n1(), async (c) => {
      // kubelet's file is what the operator wrote, byte for byte; kube-proxy's names master-2 with its own server name.
      expect(await c.execOk(`cat ${KUBELET}`)).toBe(kubeletConfig());
      expect(await c.execOk(`cat ${PROXY}`)).toBe(proxyBefore);
      expect(await c.execOk(`stat -c %a ${KUBELET}`)).toBe('600\n');
      expect(await kubeletPeers(c)).toContain(`${m1().address}:6443`);
      // kubelet connected to master-1 before kube-nginx was told to stop.
      const connected = Number((await c.execOk(`tail -n1 ${KUBELET_CONNECTS}`)).trim()) / 1e6;
      const stopping = Number((await c.execOk("journalctl -u kube-nginx.service -o short-unix --no-pager | grep -E 'Stopping kube-nginx' | tail -n1 | cut -d' ' -f1")).trim()) * 1000;
      expect(connected).toBeGreaterThan(0);
      expect(stopping).toBeGreaterThan(connected);
      expect(await leftovers(c)).toBe('');
    });

    // Run again: nothing to do, and nothing made again (not even the lock's folder).
    const again = await removeJson(['--limit', 'node-1']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts['node-1']!.steps.map((s) => s.summary)).toEqual(['no kubeconfig names the balancer', 'no balancer of k8s-ha runs here', 'nothing of k8s-ha is left here']);
    await withNode(n1(), async (c) => expect(await leftovers(c)).toBe(''));
  });

  it('killed while it moves kubelet back: the next run finishes, and kubelet ends on master-1 with nothing of k8s-ha left', async () => {
    await withNode(n1(), (c) => c.execOk(`install -m 0600 ${LAB_PROXY} ${PROXY}`));
    await deployRepointed();
    const run = startK8sha(['remove', '-i', lab().inventory, '--limit', 'node-1', '--repoint-to', `https://${m1().address}:6443`]);
    await run.waitFor(/node-1: repointing/);
    run.signal('SIGKILL');
    expect((await run.done).code).toBe(137);
    const r = await removeJson(['--limit', 'node-1', '--repoint-to', `https://${m1().address}:6443`]);
    expect(r.code, r.stderr).toBe(0);
    await withNode(n1(), async (c) => {
      expect(await servers(c, KUBELET)).toBe(`server: https://${m1().address}:6443\ntls-server-name: kubernetes\n`);
      expect(await servers(c, PROXY)).toBe(`server: https://${m1().address}:6443\ntls-server-name: kubernetes\n`);
      expect(await kubeletPeers(c)).toContain(`${m1().address}:6443`);
      expect(await leftovers(c)).toBe('');
      expect(await c.execOk(`cat ${PROXY}`)).toBe(labProxy.replace('server: https://127.0.0.1:8443', `server: https://${m1().address}:6443`));
    });
  });
});
