/**
 * The kubelet STAND-IN of the lab's runtime nodes (`lab up --runtime N`; the shared lab's nodes have
 * it): a static pod manifest dropped in /etc/kubernetes/manifests runs as a podman pod, a changed one
 * replaces it, a removed one stops it, a restart of kubelet.service leaves its pod running, and with
 * a kubeconfig the unit holds a connection to the server it names. The pod's image is made on the
 * node from its static kubectl (`kubectl proxy` listens on a port), imported with `podman import`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SshConnection } from '../../src/connect/ssh.js';
import { quote } from '../../src/util/quote.js';
import { lab, withNode } from '../helpers/lab.js';

const MANIFEST = '/etc/kubernetes/manifests/standin-test.yaml';
const IMAGE = 'localhost/k8s-ha-standin-test:1';

const pod = (port: number) => `apiVersion: v1
kind: Pod
metadata:
  name: standin-test
  namespace: kube-system
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  restartPolicy: Always
  containers:
  - name: proxy
    image: ${IMAGE}
    imagePullPolicy: Never
    command: ["/kubectl", "--kubeconfig", "/etc/k8s-ha-lab/kubeconfig", "proxy", "--address", "127.0.0.1", "--port", "${port}"]
    livenessProbe:
      httpGet: {host: 127.0.0.1, port: ${port}, path: /healthz}
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts:
    - {name: lab, mountPath: /etc/k8s-ha-lab, readOnly: true}
  volumes:
  - name: lab
    hostPath: {path: /etc/k8s-ha-lab, type: Directory}
`;

/** Poll `probe` every 200 ms until `done` holds of its answer, for up to `ms`; returns the last answer. */
async function until(probe: () => Promise<string>, done: (s: string) => boolean, ms = 10_000): Promise<string> {
  const end = Date.now() + ms;
  let last = await probe();
  while (!done(last) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    last = await probe();
  }
  return last;
}

/** Who listens on `port`: `ss`'s process column, empty when nothing does. */
const listener = (c: SshConnection, port: number) => c.execOk(`ss -Hltnp 'sport = :${port}' | grep -o 'users:.*' || true`);
const pods = (c: SshConnection) => c.execOk(`podman ps --format '{{.Names}} {{.ID}}'`);

describe.sequential('kubelet stand-in (runtime nodes)', () => {
  const node = () => lab().nodes[0]!;

  beforeAll(async () => {
    await withNode(node(), (c) =>
      c.execOk(
        // A test before this one may have put its own kubelet unit in /etc (repoint.test's fake kubelet):
        // the image's stand-in is in /lib/systemd/system.
        'rm -f /etc/systemd/system/kubelet.service /etc/kubernetes/kubelet.conf && mkdir -p /etc/kubernetes/manifests && systemctl daemon-reload && systemctl restart kubelet && ' +
          'd=$(mktemp -d) && mkdir -p $d/etc $d/tmp && chmod 1777 $d/tmp && cp /usr/bin/kubectl $d/kubectl && ' +
          'echo root:x:0:0:root:/:/kubectl > $d/etc/passwd && echo root:x:0: > $d/etc/group && ' +
          `tar -C $d -c . | podman import -q - ${IMAGE} >/dev/null && rm -rf $d`,
      ),
    );
  }, 60_000);

  // /etc/kubernetes as this file found it (repoint.test lists it), and kubelet restarted without a kubeconfig:
  // no client of this file stays connected to a master for the files after it.
  afterAll(async () => {
    await withNode(node(), (c) => c.execOk(`rm -f ${MANIFEST} /etc/kubernetes/kubelet.conf; podman pod rm -f standin-test >/dev/null 2>&1; podman rmi -f ${IMAGE} >/dev/null 2>&1; rmdir /etc/kubernetes/manifests; systemctl restart kubelet`));
  });

  it('runs a dropped manifest as a pod, replaces it when it changes, keeps it over a restart, stops it when removed', async () => {
    await withNode(node(), async (c) => {
      expect(await c.execOk('systemctl show -p Description --value kubelet')).toMatch(/kubelet STAND-IN/);
      await c.execOk(`printf '%s' ${quote(pod(18091))} > ${MANIFEST}.tmp && mv ${MANIFEST}.tmp ${MANIFEST}`);
      const first = await until(() => listener(c, 18091), (s) => s.includes('kubectl'));
      expect(first).toContain('"kubectl"');
      expect(await pods(c)).toMatch(/^standin-test-proxy /m);
      // hostNetwork: the pod's process listens in the node's own namespace (ss above); hostPath readOnly;
      // the probe is not turned into a podman healthcheck run inside the container (it has no shell).
      expect(await c.execOk(`podman inspect standin-test-proxy --format '{{.HostConfig.NetworkMode}} {{range .Mounts}}{{.Destination}} rw={{.RW}}{{end}} {{.HostConfig.RestartPolicy.Name}} health={{.Config.Healthcheck}}'`)).toBe(
        'host /etc/k8s-ha-lab rw=false always health=<nil>\n',
      );
      const id1 = /^standin-test-proxy (\S+)/m.exec(await pods(c))![1];

      await c.execOk(`printf '%s' ${quote(pod(18092))} > ${MANIFEST}.tmp && mv ${MANIFEST}.tmp ${MANIFEST}`);
      expect(await until(() => listener(c, 18092), (s) => s.includes('kubectl'))).toContain('"kubectl"');
      expect(await listener(c, 18091)).toBe('');
      const id2 = /^standin-test-proxy (\S+)/m.exec(await pods(c))![1];
      expect(id2).not.toBe(id1);

      // A kubelet restart leaves its pods running: the same container, still listening.
      const pid = (await c.execOk(`podman inspect standin-test-proxy --format '{{.State.Pid}}'`)).trim();
      await c.execOk('systemctl restart kubelet && systemctl is-active kubelet');
      await c.execOk('systemctl stop kubelet');
      expect((await c.execOk(`podman inspect standin-test-proxy --format '{{.State.Pid}}'`)).trim()).toBe(pid);
      expect(await listener(c, 18092)).toContain(`pid=${pid},`);
      await c.execOk('systemctl start kubelet');

      await c.execOk(`rm ${MANIFEST}`);
      expect(await until(() => listener(c, 18092), (s) => s === '')).toBe('');
      expect(await pods(c)).not.toMatch(/standin-test/);
      expect(await c.execOk(`journalctl -u kubelet --no-pager -o cat | grep -c 'kubelet stand-in: ${MANIFEST}'`)).not.toBe('0\n');
    });
  }, 60_000);

  it('holds a connection to the apiserver its kubeconfig names, from the unit\'s own processes', async () => {
    const master = lab().masters[0]!;
    await withNode(node(), async (c) => {
      await c.execOk(
        `sed -e ${quote(`s#server: https://127.0.0.1:8443#server: https://${master.address}:6443#`)} -e '/tls-server-name:/d' /etc/k8s-ha-lab/kubeconfig > /etc/kubernetes/kubelet.conf && ` +
          'chmod 600 /etc/kubernetes/kubelet.conf && systemctl restart kubelet',
      );
      // The established connections of processes in kubelet.service's cgroup, as k8s-ha checks them.
      const peers = () =>
        c.execOk(`for p in $(pgrep -x kubectl); do grep -q '/kubelet.service$' /proc/$p/cgroup && ss -Htnp state established | grep "pid=$p," | awk '{print $4}'; done; true`);
      expect(await until(peers, (s) => s.includes(`${master.address}:6443`))).toContain(`${master.address}:6443`);
    });
  }, 30_000);
});
