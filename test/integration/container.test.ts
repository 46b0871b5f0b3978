/**
 * lb.impl: container: the static nginx in an image k8s-ha builds on the controller (no registry, no
 * container engine there), loaded into each node's podman while the run stages, run by
 * kube-nginx-container.service on the host's network. Switched from kube-nginx and back under
 * traffic; a config change is a reload inside the same container with no request unanswered; an
 * image whose nginx rejects the config is refused before anything live changes. The last test puts
 * every node back on kube-nginx, as the other test files expect.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { k8sha } from '../helpers/cli.js';
import { describeServed, deployJson, deployWatchingGaps, expectOneShortGap, inventoryVariant } from '../helpers/deploy.js';
import { lab, withNode } from '../helpers/lab.js';
import { httpGetOnHost } from '../../src/engine/verify.js';
import { withLoad } from '../helpers/load.js';

/**
 * docs/container.md, "The balancer in a container": a switch either way is stop-first, as between nginx and
 * haproxy; podman makes and starts the container (measured 1.1 to 2.0 s here to it, 0.3 to 1.2 s back).
 */
const SWITCH_MS = 3000;
const REPO = 'localhost/k8s-ha/kube-nginx';
let containerInv: string;
const inventory = () => (containerInv ??= inventoryVariant('container', (inv) => (inv.lb.impl = 'container')));
/** The same with another lb.failTimeout: a config change, nothing else. */
let changedInv: string;
const changed = () =>
  (changedInv ??= inventoryVariant('container-fail-timeout', (inv) => {
    inv.lb.impl = 'container';
    inv.lb.failTimeout = '20s';
  }));

/** What an operator looks at on a node: systemd's units, podman's container, who listens on 8443, the live config. */
async function onNode(node: { name: string; address: string }) {
  return withNode(node, async (c) => {
    const units = (await c.exec('systemctl is-active kube-nginx-container kube-nginx; systemctl is-enabled kube-nginx-container kube-nginx')).stdout.trim().split('\n');
    const ps = (await c.exec(`podman ps --filter name=^kube-nginx$ --format '{{.ID}} {{.Image}} {{.Status}}'`)).stdout.trim();
    const listener = (await c.exec(`ss -Hltnp 'sport = :8443'`)).stdout.trim();
    const pid = /pid=(\d+)/.exec(listener)?.[1];
    const inspectPid = (await c.exec(`podman inspect --format '{{.State.Pid}}' kube-nginx 2>/dev/null`)).stdout.trim();
    const sameNs = pid && inspectPid ? (await c.exec(`[ "$(readlink /proc/${pid}/ns/pid)" = "$(readlink /proc/${inspectPid}/ns/pid)" ] && echo yes`)).stdout.trim() : '';
    const config = (await c.exec('sha256sum /etc/kube-nginx/kube-nginx.conf | cut -d" " -f1; ls /etc/kube-nginx')).stdout.trim().split('\n');
    return {
      units: { containerActive: units[0], nginxActive: units[1], containerEnabled: units[2], nginxEnabled: units[3] },
      container: ps ? { id: ps.split(' ')[0]!, image: ps.split(' ')[1]!, up: / Up /.test(` ${ps}`) } : undefined,
      listenerInContainer: sameNs === 'yes',
      configSha: config[0],
      configDir: config.slice(1),
    };
  });
}

/** What this file put in the nodes' runtimes goes again: a run of it on a kept lab starts as on a fresh one. */
const CLEAN =
  `podman rm -f --ignore kube-nginx; podman rmi -f $(podman images -q ${REPO}) localhost/site/kube-nginx:pinned localhost/site/kube-nginx:no-user 2>/dev/null; ` +
  `if systemctl is-active -q docker; then docker rm -f kube-nginx; docker rmi -f $(docker images -q ${REPO}) 2>/dev/null; systemctl stop docker; fi; ` +
  'rm -f /var/lib/k8s-ha/images/kube-nginx.tar; true';

afterAll(async () => {
  await deployJson(['-i', lab().inventory, '--serial', '100%']);
  await Promise.all(lab().nodes.map((n) => withNode(n, (c) => c.exec(CLEAN))));
});

describe.sequential('lb.impl: container (podman on the nodes)', () => {
  let image = '';

  it('switches every node from kube-nginx to the container under traffic: image loaded without a registry, verified through 127.0.0.1:8443', async () => {
    const base = await deployJson(['-i', lab().inventory, '--serial', '100%']);
    expect(base.code, base.stderr).toBe(0);
    const { result, reports } = await withLoad(lab().nodes, () => deployWatchingGaps(['-i', inventory(), '--serial', '100%']));
    const { d, gaps } = result;
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      const h = d.report.hosts[n.name]!;
      expect(h.impl).toMatchObject({ wanted: 'container', impl: 'container' });
      const load = h.steps.find((s) => s.name === 'image')!;
      expect(load.summary).toMatch(new RegExp(`^load ${REPO}:1\\.22\\.1-[0-9a-f]{12} into podman .*no registry`));
      image ||= /load (\S+) into/.exec(load.summary)![1]!;
      expect(h.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-nginx.*disable kube-nginx/);
      expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
      const s = await onNode(n);
      expect(s.units).toEqual({ containerActive: 'active', nginxActive: 'inactive', containerEnabled: 'enabled', nginxEnabled: 'disabled' });
      // podman's own view: the container runs the image this run built, and it is what holds the port.
      expect(s.container).toMatchObject({ image, up: true });
      expect(s.listenerInContainer).toBe(true);
      // Docker is installed on these nodes, its socket activated: asking about images must not start it.
      expect(await withNode(n, (c) => c.exec('systemctl is-active docker')).then((r) => r.stdout.trim())).toBe('inactive');
    }
    gaps.forEach((g, i) => expectOneShortGap('kube-nginx -> container', lab().nodes[i]!.name, g, SWITCH_MS, reports[i]));

    await withNode(lab().nodes[0]!, async (c) => {
      const unit = await c.execOk('systemctl cat kube-nginx-container');
      expect(unit).toContain(`--pull=never --net=host`);
      expect(unit).toContain(`-v /etc/kube-nginx:/etc/kube-nginx:ro ${image}`);
      // systemd is the only restarter: no --restart policy of podman's.
      expect(unit).not.toMatch(/^ExecStart=.*--restart/m);
      expect(unit).toMatch(/^Restart=always$/m);
      // The image holds nginx, its user and /tmp: nothing else (no shell to exec into).
      expect((await c.exec(`podman run --rm --pull=never --entrypoint /bin/sh ${image} -c true`)).code).not.toBe(0);
      expect(await c.execOk(`podman image inspect --format '{{.Id}}' ${image}`)).toMatch(new RegExp(`^${image.slice(-12)}`));
      // Workers run as the image's unprivileged user, the master as root (to bind and read the config).
      const ps = await c.execOk(`ps -o user:12=,args= -C kube-nginx`);
      expect(ps).toMatch(/^root +nginx: master process \/usr\/sbin\/kube-nginx /m);
      expect(ps).toMatch(/^65532 +nginx: worker process$/m);
    });

    const st = await k8sha(['status', '-i', inventory(), '--json']);
    expect(st.code, st.stderr).toBe(0);
    for (const n of JSON.parse(st.stdout).nodes) {
      expect(n).toMatchObject({ impl: 'container', wanted: 'container', service: 'active (running)', healthy: true, version: image });
      expect(Object.values(n.drift).every((x) => x === 'ok')).toBe(true);
    }
    const again = await deployJson(['-i', inventory()]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.report.totals.changed).toBe(0);
    expect(again.report.hosts[lab().nodes[0]!.name]!.steps.find((s) => s.name === 'image')!.summary).toBe(`${image} is in podman`);
  });

  it('a config change is a reload in the same container: no request through any node goes unanswered', async () => {
    const before = await Promise.all(lab().nodes.map(onNode));
    const { d, gaps } = await deployWatchingGaps(['-i', changed(), '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const [i, n] of lab().nodes.entries()) {
      const h = d.report.hosts[n.name]!;
      expect(h.steps.find((s) => s.name === 'service')!.summary).toBe('reload');
      expect(h.steps.find((s) => s.name === 'image')!.status).toBe('ok');
      const after = await onNode(n);
      // The same container (nginx re-read its config, nothing restarted), on the new config.
      expect(after.container!.id).toBe(before[i]!.container!.id);
      expect(after.configSha).not.toBe(before[i]!.configSha);
      expect(await withNode(n, (c) => c.execOk('grep -c "fail_timeout=20s" /etc/kube-nginx/kube-nginx.conf'))).toBe(`${lab().masters.length}\n`);
      const g = gaps[i]!;
      console.log(describeServed('config change (reload in the container)', n.name, g));
      // Traffic all along (at least 4 requests a second over the whole deploy): the check below is not vacuous.
      expect(g.sent).toBeGreaterThanOrEqual(Math.floor(g.stoppedMs / 250));
      expect(g.failures).toEqual([]);
    }
  });

  it('lb.runtime docker: the same image loaded into Docker, the node moved over from podman; a config change is a reload with nothing unanswered', async () => {
    const n = lab().nodes[2]!;
    const docker = (change?: (inv: Record<string, any>) => void) =>
      inventoryVariant(`container-docker${change ? '-changed' : ''}`, (inv) => {
        inv.lb.impl = 'container';
        inv.lb.runtime = 'docker';
        change?.(inv);
      });
    const d = await deployJson(['-i', docker(), '--limit', n.name]);
    expect(d.code, d.stderr).toBe(0);
    const h = d.report.hosts[n.name]!;
    expect(h.steps.find((s) => s.name === 'image')!.summary).toMatch(new RegExp(`^load ${image.replace(/[.]/g, '\\.')} into docker `));
    expect(h.verified).toMatchObject({ state: 'active (running)', status: 200 });
    const seen = await withNode(n, async (c) => ({
      docker: (await c.execOk(`docker ps --filter name=^kube-nginx$ --format '{{.Image}} {{.Status}}'`)).trim(),
      podman: (await c.execOk(`podman ps -a --filter name=^kube-nginx$ --format '{{.ID}}'`)).trim(),
      unit: await c.execOk('systemctl show -p ExecStart --value kube-nginx-container'),
      // The listener is the Docker container's process.
      owner: (await c.execOk(`p=$(ss -Hltnp 'sport = :8443' | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2); [ "$(readlink /proc/$p/ns/pid)" = "$(readlink /proc/$(docker inspect -f '{{.State.Pid}}' kube-nginx)/ns/pid)" ] && echo docker`)).trim(),
    }));
    expect(seen).toMatchObject({ docker: expect.stringMatching(new RegExp(`^${image.replace(/[.]/g, '\\.')} Up `)), podman: '', owner: 'docker' });
    expect(seen.unit).toContain('/usr/bin/docker ; argv[]=/usr/bin/docker run --name kube-nginx --rm --restart=no --pull=never --net=host');
    const { d: r, gaps } = await deployWatchingGaps(['-i', docker((inv) => (inv.lb.failTimeout = '15s')), '--limit', n.name]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.report.hosts[n.name]!.steps.find((s) => s.name === 'service')!.summary).toBe('reload');
    const g = gaps[2]!;
    console.log(describeServed('config change (reload in the Docker container)', n.name, g));
    // Traffic all along (at least 4 requests a second over the whole deploy): the check below is not vacuous.
    expect(g.sent).toBeGreaterThanOrEqual(Math.floor(g.stoppedMs / 250));
    expect(g.failures).toEqual([]);
  });

  it('an image whose nginx rejects the config is refused before anything live changes', async () => {
    // A site's image built to another layout (lb.image): the same nginx, but no kube-nginx user for
    // the config's workers. The config is unchanged: only the image is new. Found while the run
    // stages, by its nginx -t of the live config, before the unit or the container change.
    const bad = 'localhost/site/kube-nginx:no-user';
    const badInv = inventoryVariant('container-bad-image', (inv) => {
      inv.lb.impl = 'container';
      inv.lb.failTimeout = '20s';
      inv.lb.image = bad;
    });
    const n = lab().nodes[0]!;
    await withNode(n, (c) =>
      c.execOk(
        `set -e; d=$(mktemp -d); m=$(podman image mount ${image}); mkdir -p $d/usr/sbin $d/etc $d/tmp; cp $m/usr/sbin/kube-nginx $d/usr/sbin/; podman image unmount ${image} >/dev/null; ` +
          `echo 'root:x:0:0:root:/:/sbin/nologin' > $d/etc/passwd; echo 'root:x:0:' > $d/etc/group; chmod 1777 $d/tmp; ` +
          `tar -C $d -c . | podman import --change 'ENTRYPOINT ["/usr/sbin/kube-nginx"]' - ${bad} >/dev/null; rm -rf $d`,
      ),
    );
    const before = await onNode(n);
    // The config the node runs (the test before changed it): only the image differs.
    const d = await deployJson(['-i', badInv, '--limit', n.name]);
    expect(d.code, d.stderr).toBe(3);
    const h = d.report.hosts[n.name]!;
    const img = h.steps.find((s) => s.name === 'image')!;
    expect(img.status).toBe('failed');
    expect(img.error).toMatch(/validation failed, nothing was replaced[\s\S]*getpwnam\("kube-nginx"\) failed in \/etc\/kube-nginx\/kube-nginx\.conf:\d+/);
    expect(h.steps.find((s) => s.name === 'service')!.status).toBe('skipped');
    expect(h.config).toBe('previous');
    const after = await onNode(n);
    expect(after.container).toEqual(before.container);
    expect(after.configSha).toBe(before.configSha);
    // Nothing staged is left beside the live config.
    expect(after.configDir).toEqual(['kube-nginx.conf']);
    expect(await withNode(n, (c) => c.execOk('systemctl show -p ExecStart --value kube-nginx-container | grep -o "localhost/k8s-ha/kube-nginx:[^ ;]*"'))).toBe(`${before.container!.image}\n`);
  });

  it("lb.image: the site's own image is run as named, sent nowhere; one its registry cannot give stops the node before anything live changes", async () => {
    const n = lab().nodes[1]!;
    // The site's image, here the same bytes under the site's name, put in the node's runtime as a
    // registry pull would (no registry runs in the lab).
    const site = 'localhost/site/kube-nginx:pinned';
    await withNode(n, (c) => c.execOk(`podman tag ${image} ${site}`));
    const own = inventoryVariant('container-site-image', (inv) => {
      inv.lb.impl = 'container';
      inv.lb.image = site;
    });
    const d = await deployJson(['-i', own, '--limit', n.name]);
    expect(d.code, d.stderr).toBe(0);
    const h = d.report.hosts[n.name]!;
    expect(h.steps.find((s) => s.name === 'build nginx')!.summary).toBe(`image ${site} (lb.image: the site's own, pulled by each node's runtime)`);
    expect(h.steps.find((s) => s.name === 'image')!.summary).toBe(`${site} is in podman; check the config in it`);
    expect((await onNode(n)).container).toMatchObject({ image: site, up: true });
    // A registry that does not answer (nothing listens there): the pull fails while the run stages.
    const gone = `${lab().masters[0]!.address}:5999/site/kube-nginx:1.22.1`;
    const unreachable = inventoryVariant('container-unreachable-image', (inv) => {
      inv.lb.impl = 'container';
      inv.lb.image = gone;
    });
    const before = await onNode(n);
    const f = await deployJson(['-i', unreachable, '--limit', n.name]);
    expect(f.code, f.stderr).toBe(3);
    const step = f.report.hosts[n.name]!.steps.find((s) => s.name === 'image')!;
    expect(step.status).toBe('failed');
    expect(step.error).toContain(`Error: initializing source docker://${gone}: pinging container registry ${gone.split('/')[0]}`);
    expect(step.error).toMatch(/connect: connection refused$/m);
    expect(await onNode(n)).toEqual(before);
  });

  it("nginx.statusListen in the container: its /healthz and stub_status on the host's loopback, and status counts connections from it", async () => {
    const n = lab().nodes[1]!;
    const withStatus = inventoryVariant('container-status-port', (inv) => {
      inv.lb.impl = 'container';
      inv.nginx.statusListen = '127.0.0.1:8081';
    });
    const d = await deployJson(['-i', withStatus, '--limit', n.name]);
    expect(d.code, d.stderr).toBe(0);
    // Another build (the HTTP core and stub_status), so another image: the container was replaced.
    const img = /^image (\S+) /.exec(d.report.hosts[n.name]!.steps.find((s) => s.name === 'build nginx')!.summary)![1]!;
    expect(img).not.toBe(image);
    expect((await onNode(n)).container).toMatchObject({ image: img, up: true });
    await withNode(n, async (c) => {
      const h = await httpGetOnHost(c, '127.0.0.1:8081', '/healthz', 5000);
      expect([h.status, h.body]).toEqual([200, expect.stringMatching(/^Active connections: \d+/)]);
      expect((await httpGetOnHost(c, '127.0.0.1:8081', '/', 5000)).status).toBe(404);
    });
    const st = await k8sha(['status', '-i', withStatus, '--limit', n.name, '--json']);
    expect(st.code, st.stderr).toBe(0);
    const node = JSON.parse(st.stdout).nodes[0];
    expect(node).toMatchObject({ impl: 'container', version: img });
    // status's own request is one of them.
    expect(node.connections.active, node.connectionsError).toBeGreaterThanOrEqual(1);
  });

  it('switches every node back to kube-nginx under traffic; the container is stopped and its unit disabled', async () => {
    const { d, gaps } = await deployWatchingGaps(['-i', lab().inventory, '--serial', '100%']);
    expect(d.code, d.stderr).toBe(0);
    for (const n of lab().nodes) {
      expect(d.report.hosts[n.name]!.steps.find((s) => s.name === 'service')!.summary).toMatch(/switch from kube-nginx-container.*disable kube-nginx-container/);
      const s = await onNode(n);
      expect(s.units).toEqual({ containerActive: 'inactive', nginxActive: 'active', containerEnabled: 'disabled', nginxEnabled: 'enabled' });
      expect(s.container).toBeUndefined();
    }
    gaps.forEach((g, i) => expectOneShortGap('container -> kube-nginx', lab().nodes[i]!.name, g, SWITCH_MS));
  });
});
