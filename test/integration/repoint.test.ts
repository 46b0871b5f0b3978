/**
 * --repoint-kubeconfigs on three hard-way workers (the last part: a kubeadm control-plane host's kubelet, to its own apiserver): kubelet and kube-proxy move to 127.0.0.1:8443
 * only once the node's balancer is verified, one node at a time with --serial 1, with the same
 * server name verify checked; a kubelet that does not come back connected is put back on the
 * kubeconfig that run replaced (and kube-proxy with it); once verified, no copy of the kubeconfig
 * (nor of its client key) stays beside it. kube-proxy here is a real client: kubectl watching pods
 * with kube-proxy's kubeconfig, as kube-proxy watches services.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { quote } from '../../src/util/quote.js';
import { k8sha } from '../helpers/cli.js';
import { deployJson, inventoryVariant } from '../helpers/deploy.js';
import { lab, withNode } from '../helpers/lab.js';
import { fakeKubelet } from '../helpers/kubelet.js';

type Node = { name: string; address: string };

const KUBE_PROXY_KUBECONFIG = '/etc/kubernetes/kube-proxy.kubeconfig';

/** What lies in /etc/kubernetes beside the kubeconfigs, files and links (kubelet's static pod folder, which a node may have, is neither). */
const FILES = "find /etc/kubernetes -mindepth 1 -maxdepth 1 ! -type d -printf '%f\\n' | LC_ALL=C sort";

/**
 * A kube-proxy stand-in: a unit running a real client (kubectl, client-go) that watches pods with
 * kube-proxy's kubeconfig, as kubeadm writes it (the master's address, the cluster CA, no
 * tls-server-name). Each start first records what lies beside its kubeconfig (name and inode):
 * the repoint's backup is there only while the run is under way.
 */
async function fakeKubeProxy(n: Node, master: { address: string }) {
  const unit = [
    '[Service]',
    "ExecStartPre=/bin/sh -c 'stat -c \"%%n %%i\" /etc/kubernetes/kube-proxy.kubeconfig* >> /run/kube-proxy-starts; echo -- >> /run/kube-proxy-starts'",
    `ExecStart=/usr/bin/kubectl --kubeconfig ${KUBE_PROXY_KUBECONFIG} get pods --watch`,
    'StandardOutput=null',
    // kubectl ends a watch interrupted by SIGTERM with exit 1: a stop, not a failure.
    'SuccessExitStatus=1',
    'Restart=always',
  ];
  await withNode(n, (c) =>
    c.execOk(
      `mkdir -p /etc/kubernetes && sed -e ${quote(`s#server: https://127.0.0.1:8443#server: https://${master.address}:6443#`)} -e '/tls-server-name:/d' /etc/k8s-ha-lab/kubeconfig > ${KUBE_PROXY_KUBECONFIG} && ` +
        `chmod 600 ${KUBE_PROXY_KUBECONFIG} && rm -f /run/kube-proxy-starts && ` +
        `printf '%s\\n' ${unit.map(quote).join(' ')} > /etc/systemd/system/kube-proxy.service && systemctl daemon-reload && systemctl restart kube-proxy`,
    ),
  );
}

/** kube-proxy's established connections, as `ss` shows them: PEER "kubectl" per line. */
const kubeProxyConnections = (c: { execOk: (cmd: string) => Promise<string> }) =>
  c.execOk(`for p in $(systemctl show -p MainPID --value kube-proxy); do ss -Htnp state established | grep "pid=$p," | awk '{print $4}'; done`);

type Exec = { execOk: (cmd: string) => Promise<string> };

/**
 * A service's peers (kube-proxy's by default) once one is `peer` (a client connects a moment after
 * systemd starts it), or as they are after 10 s.
 */
async function connectedTo(c: Exec, peer: string, peersOf: (c: Exec) => Promise<string> = kubeProxyConnections): Promise<string> {
  let peers = '';
  for (let i = 0; i < 50 && !peers.includes(peer); i++) {
    peers = await peersOf(c);
    if (!peers.includes(peer)) await new Promise((res) => setTimeout(res, 200));
  }
  return peers;
}

/** The indentation of the line that `line` ends. */
const indent = (text: string, line: string) => /( *)$/.exec(text.slice(0, text.indexOf(line)))![1];

const started = (n: Node) => withNode(n, (c) => c.execOk('systemctl show -p ActiveEnterTimestampMonotonic --value kubelet')).then((s) => Number(s.trim()));
const proxyStarted = (n: Node) => withNode(n, (c) => c.execOk('systemctl show -p ActiveEnterTimestampMonotonic --value kube-proxy')).then((s) => Number(s.trim()));

describe.sequential('deploy --repoint-kubeconfigs', () => {
  it('restarts kubelet and kube-proxy one node at a time, writes tls-server-name, checks they connect, and restores a node whose kubelet does not', async () => {
    const nodes = lab().nodes as Node[];
    const master = lab().masters[0]!;
    // A key that must never leave the node.
    const kubeconfig =
      `apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EK\n    server: https://${master.address}:6443\n  name: kubernetes\n` +
      `kind: Config\nusers:\n- name: kubelet\n  user:\n    client-key-data: U0VDUkVULUtFWS1NQVRFUklBTAo=\n`;
    await fakeKubelet(nodes[0]!, kubeconfig, true);
    await fakeKubelet(nodes[1]!, kubeconfig, true);
    await fakeKubelet(nodes[2]!, kubeconfig, false);
    for (const n of nodes) await fakeKubeProxy(n, master);
    const proxyConfigs = await Promise.all(nodes.map((n) => withNode(n, (c) => c.execOk(`cat ${KUBE_PROXY_KUBECONFIG}`))));
    const proxyInodes = await Promise.all(nodes.map((n) => withNode(n, (c) => c.execOk(`stat -c %i ${KUBE_PROXY_KUBECONFIG}`))));
    // kube-proxy talks to the master directly before the run.
    for (const n of nodes) expect(await withNode(n, (c) => connectedTo(c, `${master.address}:6443`))).toContain(`${master.address}:6443`);
    // What earlier versions kept for good beside a repointed kubeconfig: a verified repoint removes it.
    await withNode(nodes[0]!, (c) => c.execOk(`cp -p /etc/kubernetes/kubelet.kubeconfig /etc/kubernetes/kubelet.kubeconfig.k8s-ha-orig`));
    const before = await Promise.all(nodes.map(started));
    const proxyBefore = await Promise.all(nodes.map(proxyStarted));
    try {
      const check = await k8sha(['deploy', '-i', lab().inventory, '--check', '--repoint-kubeconfigs']);
      expect(check.code, check.stderr).toBe(5);
      expect(check.stdout).toContain(`repoint kubeconfigs: /etc/kubernetes/kubelet.kubeconfig: server https://${master.address}:6443 -> https://127.0.0.1:8443`);
      expect(check.stdout).toContain('(restart kubelet)');
      expect(check.stdout).toContain(`${KUBE_PROXY_KUBECONFIG}: server https://${master.address}:6443 -> https://127.0.0.1:8443; tls-server-name (none) -> kubernetes (restart kube-proxy)`);

      // node-3's kubelet will never connect: 10 s to find that out, not the default 30.
      const r = await deployJson(['-i', lab().inventory, '--repoint-kubeconfigs', '--serial', '1', '--repoint-timeout', '10s']);
      // The key stayed on the node: not in the report, not in the progress lines.
      expect(r.stdout + r.stderr).not.toContain('U0VDUkVULUtFWS1NQVRFUklBTAo');
      expect(r.code).toBe(3);
      // One batch per node, in order, each after the node's balancer was verified.
      expect(r.stderr).toMatch(/-- repoint batch 1\/3: node-1[\s\S]*-- repoint batch 2\/3: node-2[\s\S]*-- repoint batch 3\/3: node-3/);
      const step = (n: string) => r.report.hosts[n]!.steps.find((s) => s.name === 'repoint kubeconfigs')!;
      expect(step('node-1').status).toBe('changed');
      expect(step('node-2').status).toBe('changed');
      expect(step('node-1').summary).toMatch(/kubelet, kube-proxy active \(running\) and connected through 127\.0\.0\.1:8443$/);
      expect(step('node-3').status).toBe('failed');
      expect(step('node-3').summary).toMatch(/kubelet.*the kubeconfig this run replaced is back/);
      // The balancer itself is fine on node-3: its configuration is the new one.
      expect(r.report.hosts['node-3']!.config).toBe('new');

      const after = await Promise.all(nodes.map(started));
      // Restarted one after the other: node-2's kubelet started after node-1's, node-3's after node-2's.
      expect(after[0]!).toBeGreaterThan(before[0]!);
      expect(after[1]!).toBeGreaterThan(after[0]!);
      expect(after[2]!).toBeGreaterThan(after[1]!);
      // kube-proxy restarted with them, node by node (node-3's twice: onto the new file, then back).
      const proxyAfter = await Promise.all(nodes.map(proxyStarted));
      expect(proxyAfter[0]!).toBeGreaterThan(proxyBefore[0]!);
      expect(proxyAfter[1]!).toBeGreaterThan(after[0]!);
      expect(proxyAfter[2]!).toBeGreaterThan(after[1]!);
      for (const n of nodes.slice(0, 2)) {
        await withNode(n, async (c) => {
          const kc = await c.execOk('cat /etc/kubernetes/kubelet.kubeconfig');
          expect(kc).toContain('    server: https://127.0.0.1:8443\n');
          expect(kc).toContain('    tls-server-name: kubernetes\n');
          expect(kc).toContain('client-key-data: U0VDUkVULUtFWS1NQVRFUklBTAo=');
          // No backup of this run, no earlier version's *.k8s-ha-orig: the key is in the kubeconfig alone.
          expect(await c.execOk(`${FILES}; grep -rl client-key-data /etc/kubernetes | LC_ALL=C sort`)).toBe(
            `kube-proxy.kubeconfig\nkubelet.kubeconfig\n${KUBE_PROXY_KUBECONFIG}\n/etc/kubernetes/kubelet.kubeconfig\n`,
          );
          expect(await c.execOk('stat -c %a /etc/kubernetes/kubelet.kubeconfig')).toBe('600\n');
          // kubelet's connection goes through the node's balancer.
          expect(await c.execOk('ss -Htnp state established dst 127.0.0.1:8443')).toMatch(/"bash"|"sleep"/);
        });
      }
      for (const [i, n] of nodes.slice(0, 2).entries()) {
        await withNode(n, async (c) => {
          const kc = await c.execOk(`cat ${KUBE_PROXY_KUBECONFIG}`);
          // Only the server changed, and the name verify checked was added beside it.
          expect(kc).toBe(proxyConfigs[i]!.replace(`server: https://${master.address}:6443\n`, (line) => `server: https://127.0.0.1:8443\n${indent(proxyConfigs[i]!, line)}tls-server-name: kubernetes\n`));
          expect(await c.execOk(`stat -c %a ${KUBE_PROXY_KUBECONFIG}`)).toBe('600\n');
          // When the run restarted kube-proxy, the file it replaced was kept beside it as this run's
          // backup (that very file: its inode); once verified, the backup is gone.
          expect(await c.execOk('cat /run/kube-proxy-starts')).toContain(`${KUBE_PROXY_KUBECONFIG}.k8s-ha-prev.${r.report.runId} ${proxyInodes[i]}`);
          expect(await c.execOk('ls /etc/kubernetes | grep kube-proxy')).toBe('kube-proxy.kubeconfig\n');
          // kube-proxy (kubectl) holds its watch through the balancer, and kubectl with this kubeconfig is answered through it.
          expect(await kubeProxyConnections(c)).toMatch(/^127\.0\.0\.1:8443$/m);
          expect(await kubeProxyConnections(c)).not.toContain(`${master.address}:6443`);
          const get = await c.exec(`kubectl --kubeconfig ${KUBE_PROXY_KUBECONFIG} -v=6 get --raw /version`);
          expect(get.code, get.stderr).toBe(0);
          expect(get.stderr).toMatch(/GET https:\/\/127\.0\.0\.1:8443\/version 200 OK/);
          expect(JSON.parse(get.stdout).standin).toMatch(/^master-\d$/);
        });
      }
      await withNode(nodes[2]!, async (c) => {
        expect(await c.execOk('cat /etc/kubernetes/kubelet.kubeconfig')).toBe(kubeconfig);
        // kube-proxy's file is back too (the very file: same inode), and kube-proxy on it talks to the master again.
        expect(await c.execOk(`cat ${KUBE_PROXY_KUBECONFIG}`)).toBe(proxyConfigs[2]);
        expect(await c.execOk(`stat -c %i ${KUBE_PROXY_KUBECONFIG}`)).toBe(proxyInodes[2]);
        expect(await c.execOk(FILES)).toBe('kube-proxy.kubeconfig\nkubelet.kubeconfig\n');
        expect((await c.execOk('systemctl is-active kubelet kube-proxy')).trim()).toBe('active\nactive');
        expect(await connectedTo(c, `${master.address}:6443`)).toContain(`${master.address}:6443`);
      });

      const again = await deployJson(['-i', lab().inventory, '--repoint-kubeconfigs', '--limit', 'node-1,node-2']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.report.totals.changed).toBe(0);
      expect(await started(nodes[0]!)).toBe(after[0]);
      expect(await proxyStarted(nodes[0]!)).toBe(proxyAfter[0]);
    } finally {
      for (const n of nodes) {
        await withNode(n, (c) =>
          c.execOk('systemctl stop kubelet kube-proxy; systemctl reset-failed kubelet kube-proxy 2>/dev/null; rm -rf /etc/kubernetes /etc/systemd/system/kubelet.service /etc/systemd/system/kube-proxy.service /usr/local/bin/fake-kubelet /run/kube-proxy-starts; systemctl daemon-reload; if systemctl cat kubelet >/dev/null 2>&1; then systemctl start kubelet; fi'),
        );
      }
    }
  });

  it('a failed repoint puts back the kubeconfig it replaced (the operator\'s newer one), not the one an earlier run replaced, and follows no planted symlink', async () => {
    const node = (lab().nodes as Node[])[0]!;
    const [m1, m2] = lab().masters;
    const first =
      `apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EK\n    server: https://${m1!.address}:6443\n  name: kubernetes\n` +
      `kind: Config\nusers:\n- name: kubelet\n  user:\n    client-certificate-data: T0xELUNFUlQK\n    client-key-data: T0xELUtFWQo=\n`;
    try {
      // Run A: pointed and verified.
      await fakeKubelet(node, first, true);
      const a = await deployJson(['-i', lab().inventory, '--repoint-kubeconfigs', '--limit', node.name]);
      expect(a.code, a.stderr).toBe(0);
      expect(a.report.hosts[node.name]!.steps.find((s) => s.name === 'repoint kubeconfigs')!.status).toBe('changed');

      // The operator renews the client certificate and key and points the file at another apiserver by hand
      // (mode 640 now); kubelet will not connect through the balancer this time.
      const newer = first.replace('T0xELUNFUlQK', 'TkVXLUNFUlQK').replace('T0xELUtFWQo=', 'TkVXLUtFWQo=').replace(m1!.address, (m2 ?? m1)!.address);
      await fakeKubelet(node, newer, false);
      await withNode(node, (c) =>
        c.execOk(
          'chmod 640 /etc/kubernetes/kubelet.kubeconfig && echo "not yours" > /root/victim && ' +
            // The name earlier versions staged through, planted as a symlink: never written through.
            'ln -s /root/victim /etc/kubernetes/kubelet.kubeconfig.k8s-ha-new',
        ),
      );
      const inode = await withNode(node, (c) => c.execOk('stat -c %i /etc/kubernetes/kubelet.kubeconfig'));

      // Run B fails, and puts back exactly the file it replaced.
      const b = await deployJson(['-i', lab().inventory, '--repoint-kubeconfigs', '--limit', node.name, '--repoint-timeout', '10s']);
      expect(b.code).toBe(3);
      expect(b.report.hosts[node.name]!.steps.find((s) => s.name === 'repoint kubeconfigs')!.summary).toMatch(/kubelet: no established connection to 127\.0\.0\.1:8443 after 10s; the kubeconfig this run replaced is back/);
      await withNode(node, async (c) => {
        expect(await c.execOk('cat /etc/kubernetes/kubelet.kubeconfig')).toBe(newer);
        expect(await c.execOk('stat -c "%i %a %U" /etc/kubernetes/kubelet.kubeconfig')).toBe(`${inode.trim()} 640 root\n`);
        expect(await c.execOk('cat /root/victim; readlink /etc/kubernetes/kubelet.kubeconfig.k8s-ha-new')).toBe('not yours\n/root/victim\n');
        // No backup of either run stays; the only copy of the key is the kubeconfig itself.
        expect(await c.execOk(`${FILES}; grep -rl client-key-data /etc/kubernetes`)).toBe('kubelet.kubeconfig\nkubelet.kubeconfig.k8s-ha-new\n/etc/kubernetes/kubelet.kubeconfig\n');
        expect((await c.execOk('systemctl is-active kubelet')).trim()).toBe('active');
      });
    } finally {
      await withNode(node, (c) => c.execOk('systemctl stop kubelet; rm -rf /etc/kubernetes /etc/systemd/system/kubelet.service /usr/local/bin/fake-kubelet /root/victim; systemctl daemon-reload; if systemctl cat kubelet >/dev/null 2>&1; then systemctl start kubelet; fi'));
    }
  });
});

/**
 * A kubeadm control-plane host: its kubelet's /etc/kubernetes/kubelet.conf names controlPlaneEndpoint,
 * one apiserver for every host (here master-2). master-1 is listed as a node of its own with
 * `repointTo: master-1`: --repoint-kubeconfigs points its kubelet at its own apiserver, restarts it
 * and checks it connects there, or puts the file back. The kubelet is the lab's kubelet STAND-IN, a
 * real client (kubectl, client-go) holding a connection to the server its kubeconfig names.
 */
describe.sequential("a control-plane host's kubelet, to its own apiserver (nodes[].repointTo)", () => {
  const KUBELET_CONF = '/etc/kubernetes/kubelet.conf';
  const m1 = () => lab().masters[0]!;
  const m2 = () => lab().masters[1]!;
  // The node-local balancer on a port of its own: master-1's 8443 may be the VIP's (vip.test).
  const inventory = () =>
    inventoryVariant('control-plane', (inv) => {
      inv.lb.listen = '127.0.0.1:8453';
      inv.nodes = [{ name: m1().name, address: m1().address, repointTo: m1().name }];
    });
  /** kubeadm's kubelet.conf, naming controlPlaneEndpoint (master-2), with a key that never leaves the host. */
  const kubeletConf = () =>
    fs
      .readFileSync(path.join(lab().dir, 'kubeconfig'), 'utf8')
      .replace(/server: \S+/, `server: https://${m2().address}:6443`)
      .replace(/^\s*tls-server-name:.*\n/m, '');
  /** The servers the kubelet's own processes (kubelet.service's cgroup) hold established connections to. */
  const kubeletPeers = (c: Exec) =>
    c.execOk(`for p in $(pgrep -x kubectl); do grep -q '/kubelet.service$' /proc/$p/cgroup && ss -Htnp state established | grep "pid=$p," | awk '{print $4}'; done; true`);
  const peersOnce = (c: Exec, want: string) => connectedTo(c, want, kubeletPeers);
  const setUp = () =>
    withNode(m1(), (c) => c.execOk(`mkdir -p /etc/kubernetes && printf '%s' ${quote(kubeletConf())} > ${KUBELET_CONF} && chmod 600 ${KUBELET_CONF} && systemctl restart kubelet`));

  afterAll(async () => {
    await k8sha(['lab', 'master', '--dir', lab().dir, m1().name, 'start']);
    // master-1 as the other files expect it: no balancer of a node's, its kubelet without a kubeconfig.
    await withNode(m1(), (c) =>
      c.execOk(
        `systemctl disable --now kube-nginx 2>/dev/null; rm -rf /etc/systemd/system/kube-nginx.service /opt/k8s/kube-nginx ${KUBELET_CONF}*; ` +
          'systemctl daemon-reload; systemctl restart kubelet; userdel kube-nginx 2>/dev/null; true',
      ),
    );
  });

  it('kubeadm left it on controlPlaneEndpoint (master-2): it is pointed at its own apiserver, restarted, and connects there; a second run changes nothing', async () => {
    await setUp();
    expect(await withNode(m1(), (c) => peersOnce(c, `${m2().address}:6443`))).toContain(`${m2().address}:6443`);
    const d = await deployJson(['-i', inventory(), '--limit', m1().name, '--repoint-kubeconfigs']);
    expect(d.code, d.stderr).toBe(0);
    const step = d.report.hosts[m1().name]!.steps.find((s) => s.name === 'repoint kubeconfigs')!;
    expect(step.summary).toBe(
      `${KUBELET_CONF}: server https://${m2().address}:6443 -> https://${m1().address}:6443; tls-server-name (none) -> kubernetes (restart kubelet); ` +
        `kubelet active (running) and connected to master-1's apiserver (${m1().address}:6443)`,
    );
    await withNode(m1(), async (c) => {
      expect((await c.execOk(`grep -E '^ *(server|tls-server-name):' ${KUBELET_CONF}`)).replace(/^ +/gm, '')).toBe(`server: https://${m1().address}:6443\ntls-server-name: kubernetes\n`);
      const peers = await peersOnce(c, `${m1().address}:6443`);
      expect(peers).toContain(`${m1().address}:6443`);
      expect(peers).not.toContain(`${m2().address}:6443`);
      // No copy of the key stays beside it.
      expect(await c.execOk(FILES)).toBe('kubelet.conf\n');
    });
    const again = await deployJson(['-i', inventory(), '--limit', m1().name, '--repoint-kubeconfigs']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.hosts[m1().name]!.steps.find((s) => s.name === 'repoint kubeconfigs')!.summary).toBe(`every kubeconfig present already points at master-1's apiserver`);
  });

  it('its own apiserver down: the kubelet does not connect, and the kubeconfig kubeadm wrote is put back, the kubelet on master-2 again', async () => {
    await setUp();
    const before = await withNode(m1(), (c) => c.execOk(`cat ${KUBELET_CONF}`));
    expect((await k8sha(['lab', 'master', '--dir', lab().dir, m1().name, 'stop'])).code).toBe(0);
    try {
      const d = await deployJson(['-i', inventory(), '--limit', m1().name, '--repoint-kubeconfigs', '--repoint-timeout', '5s']);
      expect(d.code).toBe(3);
      expect(d.report.hosts[m1().name]!.steps.find((s) => s.name === 'repoint kubeconfigs')!.summary).toMatch(
        new RegExp(`kubelet: no established connection to ${m1().address.replace(/\./g, '\\.')}:6443 after 5s; the kubeconfig this run replaced is back`),
      );
      await withNode(m1(), async (c) => {
        expect(await c.execOk(`cat ${KUBELET_CONF}`)).toBe(before);
        expect(await peersOnce(c, `${m2().address}:6443`)).toContain(`${m2().address}:6443`);
        expect(await c.execOk(FILES)).toBe('kubelet.conf\n');
      });
    } finally {
      await k8sha(['lab', 'master', '--dir', lab().dir, m1().name, 'start']);
    }
  });
});
