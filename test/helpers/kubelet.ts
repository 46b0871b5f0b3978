/** Stand-ins for a hard-way worker's kubelet, as the repoint and remove tests need it. */
import { quote } from '../../src/util/quote.js';
import { withNode } from './lab.js';

type Node = { name: string; address: string };

/** Where the kubelet stand-in writes the time (ns since the epoch) of each connection it makes. */
export const KUBELET_CONNECTS = '/run/kubelet-connects';

/**
 * A kubelet stand-in: a unit whose process holds a TCP connection to what its kubeconfig names (or
 * never connects), noting when it connected in KUBELET_CONNECTS.
 */
export async function fakeKubelet(n: Node, kubeconfig: string, connects: boolean): Promise<void> {
  // Reads the server from its kubeconfig as kubelet does, connects, and keeps the connection open.
  const script = connects
    ? ['#!/bin/bash', 'u=$(sed -n "s#^ *server: *https://##p" /etc/kubernetes/kubelet.kubeconfig | head -n1)', 'exec 3<>"/dev/tcp/${u%:*}/${u##*:}"', `date +%s%N >> ${KUBELET_CONNECTS}`, 'exec sleep infinity']
    : ['#!/bin/sh', 'exec sleep infinity'];
  await withNode(n, (c) =>
    c.execOk(
      `mkdir -p /etc/kubernetes && printf '%s' ${quote(kubeconfig)} > /etc/kubernetes/kubelet.kubeconfig && chmod 600 /etc/kubernetes/kubelet.kubeconfig && ` +
        `printf '%s\\n' ${script.map(quote).join(' ')} > /usr/local/bin/fake-kubelet && chmod 755 /usr/local/bin/fake-kubelet && ` +
        `printf '%s\\n' '[Service]' 'ExecStart=/usr/local/bin/fake-kubelet' > /etc/systemd/system/kubelet.service && systemctl daemon-reload && systemctl restart kubelet`,
    ),
  );
}

/** The kubelet unit of the lab back as it was: the stand-in of the image, with no kubeconfig. */
export const UNDO_FAKE_KUBELET =
  `systemctl stop kubelet; systemctl reset-failed kubelet 2>/dev/null; rm -rf /etc/kubernetes /etc/systemd/system/kubelet.service /usr/local/bin/fake-kubelet ${KUBELET_CONNECTS}; ` +
  'systemctl daemon-reload; if systemctl cat kubelet >/dev/null 2>&1; then systemctl start kubelet; fi';
