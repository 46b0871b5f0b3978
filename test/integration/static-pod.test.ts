/**
 * lb.impl: static-pod: the image k8s-ha builds (no registry), loaded into the runtime kubelet uses,
 * run by the node's kubelet from /etc/kubernetes/manifests/kube-nginx.yaml. In the lab that kubelet is
 * the STAND-IN (podman kube play, docs/lab.md, "The kubelet stand-in"). node-1 and node-2 are switched from
 * kube-nginx to the static pod and back under traffic; a config change is a reload of the pod's nginx
 * with no request unanswered; a roll of the pod interrupted by Ctrl-C is put back; an image whose nginx
 * rejects the config is refused before the manifest moves; node-2 goes from the pod to the container
 * under systemd. The last test puts every node back on kube-nginx, as the other files expect.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { k8sha, startK8sha } from '../helpers/cli.js';
import { describeServed, deployJson, deployWatchingGaps, expectOneShortGap, inventoryVariant, type DeployJson } from '../helpers/deploy.js';
import { lab, withNode } from '../helpers/lab.js';
import { withLoad } from '../helpers/load.js';
import { httpGetOnHost } from '../../src/engine/verify.js';

/**
 * docs/container.md, "The balancer as a static pod": stop-first, then kubelet sees the manifest and starts the pod
 * (the stand-in sees it through inotify and runs podman kube play); measured here, see the log.
 */
const SWITCH_MS = 5000;
const MANIFEST = '/etc/kubernetes/manifests/kube-nginx.yaml';
const ASIDE = '/etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-aside';
const REPO = 'localhost/k8s-ha/kube-nginx';
const PODS = ['node-1', 'node-2'];
const LIMIT = ['--limit', PODS.join(',')];

const variant = (name: string, change: (inv: Record<string, any>) => void = () => {}) =>
  inventoryVariant(`static-pod-${name}`, (inv) => {
    inv.lb.impl = 'static-pod';
    inv.nginx.statusListen = '127.0.0.1:8081';
    change(inv);
  });
let baseInv: string;
const inventory = () => (baseInv ??= variant('base'));

const node = (name: string) => lab().nodes.find((n) => n.name === name)!;

/** What an operator looks at: the manifest, kubelet's pod (podman's view, the stand-in's runtime), who listens on 8443, systemd's units. */
async function onNode(name: string) {
  return withNode(node(name), async (c) => {
    const manifest = (await c.exec(`sha256sum ${MANIFEST} 2>/dev/null | cut -c1-16; grep -o 'image: .*' ${MANIFEST} 2>/dev/null`)).stdout.trim().split('\n');
    const pod = (await c.exec(`podman ps --filter name=^kube-nginx-lb-nginx$ --format '{{.ID}} {{.Image}} {{.Status}}'`)).stdout.trim();
    const listener = (await c.exec(`p=$(ss -Hltnp 'sport = :8443' | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2); c=$(podman inspect --format '{{.State.Pid}}' kube-nginx-lb-nginx 2>/dev/null); [ -n "$p" ] && [ -n "$c" ] && [ "$(readlink /proc/$p/ns/pid)" = "$(readlink /proc/$c/ns/pid)" ] && echo pod || echo "not-pod $p"`)).stdout.trim();
    const units = (await c.exec('systemctl is-active kube-nginx kube-nginx-container; systemctl is-enabled kube-nginx kube-nginx-container 2>/dev/null')).stdout.trim().split('\n');
    const files = (await c.exec(`sha256sum /etc/kube-nginx/kube-nginx.conf 2>/dev/null | cut -c1-16; ls -A /etc/kube-nginx /etc/kubernetes/manifests 2>/dev/null | tr '\\n' ' '; ls ${ASIDE} 2>/dev/null; cat /var/lib/k8s-ha/journal/state 2>/dev/null`)).stdout.trim().split('\n');
    return {
      manifest: manifest[0] ? { sha: manifest[0], image: manifest[1]?.replace(/^image: "?|"$/g, '') } : undefined,
      pod: pod ? { id: pod.split(' ')[0]!, image: pod.split(' ')[1]!, up: / Up /.test(` ${pod}`) } : undefined,
      listenerInPod: listener === 'pod',
      units: { nginx: units[0], container: units[1], nginxEnabled: units[2], containerEnabled: units[3] },
      config: files[0],
      leftovers: files.slice(1).join(' '),
    };
  });
}

const CLEAN =
  `rm -f ${MANIFEST} ${ASIDE}; for i in $(seq 1 50); do podman pod exists kube-nginx-lb || break; sleep 0.2; done; podman pod rm -f kube-nginx-lb >/dev/null 2>&1; ` +
  `podman rm -f --ignore kube-nginx; podman rmi -f $(podman images -q ${REPO}) localhost/site/kube-nginx:no-user localhost/site/kube-nginx:retag 2>/dev/null; rm -f /var/lib/k8s-ha/images/kube-nginx.tar; true`;

afterAll(async () => {
  await deployJson(['-i', lab().inventory, '--serial', '100%']);
  await Promise.all(lab().nodes.map((n) => withNode(n, (c) => c.exec(CLEAN))));
});

describe.sequential('lb.impl: static-pod (kubelet stand-in, podman)', () => {
  let image = '';

  it('switches node-1 and node-2 from kube-nginx to the static pod under traffic: image loaded without a registry, the pod verified through 127.0.0.1:8443', async () => {
    const base = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(base.code, base.stderr).toBe(0);
    const { result, reports } = await withLoad(PODS.map(node), () => deployWatchingGaps(['-i', inventory(), ...LIMIT, '--serial', '100%']));
    const { d, gaps } = result;
    expect(d.code, d.stderr).toBe(0);
    for (const name of PODS) {
      const h = d.report.hosts[name]!;
      expect(h.impl).toMatchObject({ wanted: 'static-pod', impl: 'static-pod' });
      const load = h.steps.find((s) => s.name === 'image')!;
      expect(load.summary).toMatch(new RegExp(`^load ${REPO}:1\\.22\\.1-[0-9a-f]{12} into podman .*no registry`));
      image ||= /load (\S+) into/.exec(load.summary)![1]!;
      expect(h.steps.find((s) => s.name === 'static pod')!.summary).toMatch(new RegExp(`^write ${MANIFEST} \\(new\\), switch from kube-nginx, disable kube-nginx$`));
      expect(h.verified).toMatchObject({ status: 200 });
      // The runtime's own view: the pod's nginx is the first process of a container podman runs.
      expect(h.steps.find((s) => s.name === 'verify')!.summary).toMatch(/; podman runs it as kube-nginx-lb-nginx \(running\)$/);
      const s = await onNode(name);
      expect(s).toMatchObject({ manifest: { image }, pod: { image, up: true }, listenerInPod: true, units: { nginx: 'inactive', nginxEnabled: 'disabled' } });
    }
    for (const [i, n] of lab().nodes.entries()) {
      if (PODS.includes(n.name)) expectOneShortGap('kube-nginx -> static pod', n.name, gaps[i]!, SWITCH_MS, reports[i]);
      else expect(gaps[i]!.failures, 'node-3 is not in --limit').toEqual([]);
    }
    await withNode(node('node-1'), async (c) => {
      // The pod's nginx: the master as root, the workers as the image's user; its own /healthz, which the probes ask.
      const ps = await c.execOk(`ps -o user:12=,args= -C kube-nginx`);
      expect(ps).toMatch(/^root +nginx: master process \/usr\/sbin\/kube-nginx /m);
      expect(ps).toMatch(/^65532 +nginx: worker process$/m);
      expect((await httpGetOnHost(c, '127.0.0.1:8081', '/healthz', 5000)).status).toBe(200);
      // kubelet (here its stand-in) ran it: its journal names the manifest.
      expect(await c.execOk(`journalctl -u kubelet --no-pager -o cat | grep -c ${MANIFEST}: || true`)).not.toBe('0\n');
    });
    const st = await k8sha(['status', '-i', inventory(), ...LIMIT, '--json']);
    expect(st.code, st.stderr).toBe(0);
    for (const n of JSON.parse(st.stdout).nodes) {
      expect(n).toMatchObject({ impl: 'static-pod', wanted: 'static-pod', service: 'active (running)', healthy: true, version: image });
      expect(Object.entries(n.drift).filter(([, x]) => x !== 'ok')).toEqual([]);
      expect(n.connections.active, n.connectionsError).toBeGreaterThanOrEqual(1);
    }
    const again = await deployJson(['-i', inventory(), ...LIMIT]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.totals.changed).toBe(0);
  });

  it('a config change is a reload of the pod\'s nginx: the same container, the new config, no request unanswered', async () => {
    const before = await Promise.all(PODS.map(onNode));
    const changed = variant('fail-timeout', (inv) => (inv.lb.failTimeout = '20s'));
    const { d, gaps } = await deployWatchingGaps(['-i', changed, ...LIMIT, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const [i, name] of PODS.entries()) {
      const h = d.report.hosts[name]!;
      expect(h.steps.find((s) => s.name === 'static pod')!.summary).toBe('reload');
      expect(h.steps.find((s) => s.name === 'image')!.status).toBe('ok');
      const after = await onNode(name);
      expect(after.pod!.id).toBe(before[i]!.pod!.id);
      expect(after.manifest).toEqual(before[i]!.manifest);
      expect(after.config).not.toBe(before[i]!.config);
      expect(await withNode(node(name), (c) => c.execOk('grep -c "fail_timeout=20s" /etc/kube-nginx/kube-nginx.conf'))).toBe(`${lab().masters.length}\n`);
      const g = gaps[lab().nodes.findIndex((n) => n.name === name)]!;
      console.log(describeServed('config change (reload in the static pod)', name, g));
      expect(g.sent).toBeGreaterThanOrEqual(Math.floor(g.stoppedMs / 250));
      expect(g.failures).toEqual([]);
    }
  });

  it('Ctrl-C while node-1 verifies a roll of the pod that cannot work: exit 130, node-1 put back (its config, the same pod, serving), node-2 untouched', async () => {
    const before = await Promise.all(PODS.map(onNode));
    // Masters that refuse: nginx -t passes, verify never can.
    const refusing = variant('refusing', (inv) => {
      inv.lb.failTimeout = '20s';
      inv.masters = inv.masters.slice(0, 2).map((m: { name: string }, i: number) => ({ ...m, name: `refusing-${i + 1}`, port: 6999 }));
    });
    const run = startK8sha(['deploy', '-i', refusing, ...LIMIT, '--serial', '1', '--max-fail-percent', '100', '--verify-timeout', '5s', '--json']);
    await run.waitFor(/node-1: verifying/);
    await new Promise((r) => setTimeout(r, 500));
    run.signal('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(130);
    const report = JSON.parse(r.stdout) as DeployJson;
    expect(report.hosts['node-1']).toMatchObject({ status: 'failed', config: 'previous', rollback: { ok: true } });
    expect(report.hosts['node-2']!.status).toBe('skipped');
    const after = await Promise.all(PODS.map(onNode));
    // The config put back and re-read by the same pod; no journal, no staged file or backup left.
    expect(after).toEqual(before);
    const st = await k8sha(['status', '-i', inventory(), ...LIMIT, '--json']);
    expect(JSON.parse(st.stdout).nodes.map((n: { healthy: boolean }) => n.healthy)).toEqual([true, true]);
  });

  it('a new image whose verify fails: the previous manifest put back, and the rollback is said done only once kubelet runs the previous pod again', async () => {
    const before = await onNode('node-1');
    // Another image of the same nginx (a site's tag of it, lb.image) with masters that refuse: kubelet
    // replaces the pod, which starts, and verify can never pass.
    const retag = 'localhost/site/kube-nginx:retag';
    await withNode(node('node-1'), (c) => c.execOk(`podman tag ${image} ${retag}`));
    const failing = variant('new-image-refusing', (inv) => {
      inv.lb.image = retag;
      inv.lb.failTimeout = '20s';
      inv.masters = inv.masters.slice(0, 2).map((m: { name: string }, i: number) => ({ ...m, name: `refusing-${i + 1}`, port: 6999 }));
    });
    const d = await deployJson(['-i', failing, '--limit', 'node-1', '--verify-timeout', '5s']);
    expect(d.code, d.stderr).toBe(3);
    const h = d.report.hosts['node-1']!;
    expect(h.steps.find((s) => s.name === 'static pod')!.summary).toBe(`write ${MANIFEST} (content changed), kubelet replaces the pod`);
    expect(h).toMatchObject({ status: 'failed', config: 'previous', rollback: { ok: true, detail: 'previous files restored and the pod of the previous manifest serves again' } });
    // When the run says so, the previous pod serves: its manifest, its image, the port.
    const after = await onNode('node-1');
    expect(after).toMatchObject({ manifest: before.manifest, pod: { image, up: true }, listenerInPod: true, config: before.config });
    expect(after.leftovers).toBe(before.leftovers);
    expect((await k8sha(['status', '-i', inventory(), '--limit', 'node-1', '--json'])).code).toBe(0);
  });

  it('an image whose nginx rejects the config is refused before the manifest moves: the pod runs on', async () => {
    // A site's image (lb.image) built to another layout: the same nginx, no kube-nginx user for its workers.
    const bad = 'localhost/site/kube-nginx:no-user';
    await withNode(node('node-1'), (c) =>
      c.execOk(
        `set -e; d=$(mktemp -d); m=$(podman image mount ${image}); mkdir -p $d/usr/sbin $d/etc $d/tmp; cp $m/usr/sbin/kube-nginx $d/usr/sbin/; podman image unmount ${image} >/dev/null; ` +
          `echo 'root:x:0:0:root:/:/sbin/nologin' > $d/etc/passwd; echo 'root:x:0:' > $d/etc/group; chmod 1777 $d/tmp; ` +
          `tar -C $d -c . | podman import --change 'ENTRYPOINT ["/usr/sbin/kube-nginx"]' - ${bad} >/dev/null; rm -rf $d`,
      ),
    );
    const before = await onNode('node-1');
    // The config the node runs (the tests before left lb.failTimeout 20s): only the image differs.
    const badInv = variant('bad-image', (inv) => {
      inv.lb.image = bad;
      inv.lb.failTimeout = '20s';
    });
    const d = await deployJson(['-i', badInv, '--limit', 'node-1']);
    expect(d.code, d.stderr).toBe(3);
    const h = d.report.hosts['node-1']!;
    const img = h.steps.find((s) => s.name === 'image')!;
    expect(img.status).toBe('failed');
    expect(img.error).toMatch(/validation failed, nothing was replaced[\s\S]*getpwnam\("kube-nginx"\) failed in \/etc\/kube-nginx\/kube-nginx\.conf:\d+/);
    expect(h.steps.find((s) => s.name === 'static pod')!.status).toBe('skipped');
    expect(h.config).toBe('previous');
    expect(await onNode('node-1')).toEqual(before);
  });

  it('node-2 from the static pod to the container under systemd, node-1 back to kube-nginx, under traffic: the manifest leaves kubelet\'s folder, the pod stops', async () => {
    const container = variant('to-container', (inv) => {
      inv.nodes.find((n: { name: string }) => n.name === 'node-2').lb = { impl: 'container' };
      inv.nodes.find((n: { name: string }) => n.name === 'node-1').lb = { impl: 'nginx' };
    });
    const { d, gaps } = await deployWatchingGaps(['-i', container, ...LIMIT, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.report.hosts['node-1']!.steps.find((s) => s.name === 'service')!.summary).toMatch(/^(daemon-reload, )?switch from the static pod, (enable, )?remove the static pod manifest$/);
    expect(d.report.hosts['node-2']!.steps.find((s) => s.name === 'service')!.summary).toMatch(/^(daemon-reload, )?switch from the static pod, (enable, )?remove the static pod manifest$/);
    const [n1, n2] = await Promise.all(PODS.map(onNode));
    expect(n1).toMatchObject({ manifest: undefined, pod: undefined, units: { nginx: 'active', nginxEnabled: 'enabled' } });
    expect(n2).toMatchObject({ manifest: undefined, pod: undefined, units: { nginx: 'inactive', container: 'active', containerEnabled: 'enabled' } });
    for (const s of [n1!, n2!]) expect(s.leftovers).not.toMatch(/kube-nginx\.yaml|static-pod\.yaml|k8s-ha-(new|prev)/);
    for (const [i, n] of lab().nodes.entries()) {
      if (PODS.includes(n.name)) expectOneShortGap(`static pod -> ${n.name === 'node-1' ? 'kube-nginx' : 'container'}`, n.name, gaps[i]!, SWITCH_MS);
    }
    // And node-2 back to the static pod from the container, then both back to kube-nginx (the last test).
    const back = await deployWatchingGaps(['-i', inventory(), '--limit', 'node-2']);
    expect(back.d.code, back.d.stderr).toBe(0);
    expect(back.d.report.hosts['node-2']!.steps.find((s) => s.name === 'static pod')!.summary).toMatch(/switch from kube-nginx-container, disable kube-nginx-container$/);
    expect(await onNode('node-2')).toMatchObject({ pod: { image, up: true }, listenerInPod: true, units: { container: 'inactive', containerEnabled: 'disabled' } });
    expectOneShortGap('container -> static pod', 'node-2', back.gaps[1]!, SWITCH_MS);
  });

  it("node-3's kubelet on containerd (its CRI endpoint): the image imported into containerd's k8s.io namespace, the config checked in it with ctr, the pod run from there under traffic; a second run changes nothing; back to kube-nginx", async () => {
    const n3 = node('node-3');
    const i3 = lab().nodes.findIndex((n) => n.name === 'node-3');
    // As a kubeadm drop-in would: kubelet's own command line names containerd's socket.
    const DROPIN = '/etc/systemd/system/kubelet.service.d/20-containerd.conf';
    const exec = `ExecStart=/usr/local/bin/kubelet-standin --kubeconfig /etc/kubernetes/kubelet.conf --pod-manifest-path /etc/kubernetes/manifests --container-runtime-endpoint unix:///run/containerd/containerd.sock`;
    await withNode(n3, (c) => c.execOk(`mkdir -p ${DROPIN.slice(0, DROPIN.lastIndexOf('/'))} && printf '[Service]\\nExecStart=\\n%s\\n' '${exec}' > ${DROPIN} && systemctl daemon-reload && systemctl restart kubelet`));
    /** containerd's view: kubelet's images of the repository, and the pod's task (ID PID STATUS). */
    const inContainerd = () =>
      withNode(n3, async (c) => ({
        images: (await c.exec(`ctr -n k8s.io images ls -q 2>/dev/null | grep -F ${REPO}: || true`)).stdout.trim(),
        task: (await c.exec(`ctr -n k8s.io task ls 2>/dev/null | awk '$1 == "kube-nginx-lb" { print $1, $3 }'`)).stdout.trim(),
        listenerIsTask: (await c.exec(`p=$(ss -Hltnp 'sport = :8443' | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2); t=$(ctr -n k8s.io task ls 2>/dev/null | awk '$1 == "kube-nginx-lb" { print $2 }'); [ -n "$p" ] && [ "$p" = "$t" ] && echo yes || echo "no $p $t"`)).stdout.trim(),
        podmanPod: (await c.exec('podman pod exists kube-nginx-lb && echo yes || echo no')).stdout.trim(),
      }));
    try {
      const { result, reports } = await withLoad([n3], () => deployWatchingGaps(['-i', inventory(), '--limit', 'node-3']));
      const { d, gaps } = result;
      expect(d.code, d.stderr).toBe(0);
      const h = d.report.hosts['node-3']!;
      expect(h.steps.find((s) => s.name === 'image')!.summary).toMatch(new RegExp(`^load ${image.replaceAll('.', '\\.')} into containerd \\([0-9.]+ MB, no registry\\)$`));
      expect(h.steps.find((s) => s.name === 'static pod')!.summary).toBe(`write ${MANIFEST} (new), switch from kube-nginx, disable kube-nginx`);
      expect(h.verified).toMatchObject({ status: 200 });
      expect(h.steps.find((s) => s.name === 'verify')!.summary).toMatch(/; containerd runs it as kube-nginx-lb \(RUNNING\)$/);
      // The image is containerd's alone (podman on the node never saw it), and the pod's nginx, which
      // holds the port, is the task containerd runs.
      expect(await inContainerd()).toEqual({ images: image, task: 'kube-nginx-lb RUNNING', listenerIsTask: 'yes', podmanPod: 'no' });
      expect(await withNode(n3, (c) => c.execOk(`podman images -q ${REPO} | wc -l`))).toBe('0\n');
      expect(await withNode(n3, (c) => c.execOk('journalctl -u kubelet --no-pager -o cat | grep -c "started container kube-nginx-lb (ctr run, containerd)" || true'))).not.toBe('0\n');
      expectOneShortGap('kube-nginx -> static pod (containerd)', 'node-3', gaps[i3]!, SWITCH_MS, reports[0]);
      const st = await k8sha(['status', '-i', inventory(), '--limit', 'node-3', '--json']);
      expect(JSON.parse(st.stdout).nodes[0]).toMatchObject({ impl: 'static-pod', service: 'active (running)', healthy: true, version: image });
      const again = await deployJson(['-i', inventory(), '--limit', 'node-3']);
      expect(again.code, again.stderr).toBe(0);
      expect(again.report.totals.changed).toBe(0);
      expect(again.report.hosts['node-3']!.steps.find((s) => s.name === 'image')!.summary).toBe(`${image} is in containerd`);
      // Back to kube-nginx: the manifest leaves kubelet's folder, and kubelet stops the pod.
      const back = await deployWatchingGaps(['-i', lab().inventory, '--limit', 'node-3']);
      expect(back.d.code, back.d.stderr).toBe(0);
      expectOneShortGap('static pod (containerd) -> kube-nginx', 'node-3', back.gaps[i3]!, SWITCH_MS);
      // kubelet stops the pod as it sees the manifest go (the port was free before kube-nginx started); ctr removes the task just after.
      let task = (await inContainerd()).task;
      for (let i = 0; i < 20 && task; i++) task = await new Promise((r) => setTimeout(r, 250)).then(async () => (await inContainerd()).task);
      expect(task).toBe('');
    } finally {
      // Whatever failed above: node-3 back on kube-nginx while its kubelet still runs pods on containerd, then its kubelet as before.
      await deployJson(['-i', lab().inventory, '--limit', 'node-3']);
      await withNode(n3, (c) =>
        c.exec(`rm -f ${DROPIN}; systemctl daemon-reload; systemctl restart kubelet; for r in $(ctr -n k8s.io images ls -q 2>/dev/null | grep -F ${REPO}:); do ctr -n k8s.io images rm "$r"; done; systemctl stop containerd; true`),
      );
    }
  });
});
