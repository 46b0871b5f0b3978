/**
 * lb.impl static-pod, the pure parts and the one shell check that needs no container: the manifest
 * kubelet reads, the plan of the static pod step (a late manifest, a switch, a reload), a unit taking
 * the port back from the pod, the commit order, and how the pod's nginx master is told from another
 * listener. The lab runs all of it with its kubelet stand-in (test/integration/static-pod.test.ts).
 */
import net from 'node:net';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { inventorySchema } from '../../src/inventory/schema.js';
import { checkRules } from '../../src/inventory/rules.js';
import { parsePodMaster, podBackProblem, podMasterScript, podProblem, podRuntimeProblem, podRuntimeScript, renderStaticPod, STATIC_POD_ASIDE, STATIC_POD_MANIFEST } from '../../src/lb/static-pod.js';
import { staticPod } from '../../src/ops/static-pod.js';
import { service } from '../../src/ops/service.js';
import { image, manifestImage } from '../../src/ops/image.js';
import { applyScript, restoreScript } from '../../src/engine/scripts.js';
import { disturbsRunningService } from '../../src/engine/plan.js';
import { emptyRequest, factScript, KUBELET_FACT_SCRIPT, parseFacts, type HostFacts } from '../../src/facts/host.js';
import { resolveRuntime } from '../../src/lb/container.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Handler } from '../../src/ops/types.js';
import type { HostPlan } from '../../src/engine/plan.js';

const REF = 'localhost/k8s-ha/kube-nginx:1.22.1-0123456789ab';
const base = { masters: [{ name: 'm1', address: '10.0.0.1' }], nodes: [{ name: 'n1' }], lb: { impl: 'static-pod' } };
const inv = inventorySchema.parse({ ...base, nginx: { version: '1.22.1', sources: ['https://nginx.org/download/nginx-1.22.1.tar.gz'], sha256: 'a'.repeat(64), statusListen: '127.0.0.1:8081' } });

const unit = (activeState: string, unitFileState: string) => ({ activeState, subState: activeState === 'active' ? 'running' : 'dead', unitFileState, loadState: 'loaded', activeEnterTimestamp: '', mainPid: 0 });
const file = { sha256: '0'.repeat(64), mode: '644', owner: 'root:root' };
const facts = (o: { files?: Record<string, unknown>; units?: Record<string, unknown>; texts?: Record<string, string> }) =>
  ({ files: {}, dirs: {}, units: {}, guards: {}, texts: {}, tools: ['podman'], images: {}, containers: {}, ...o }) as unknown as HostFacts;
const ctx = (notified: Handler[] = []) => ({ notified: new Set(notified), artifacts: {}, render: () => renderStaticPod(inv, REF) });
const podArgs = staticPod.args.parse({
  manifest: STATIC_POD_MANIFEST,
  template: 'kube-nginx.pod.yaml',
  listen: '127.0.0.1:8443',
  replaces: [{ unit: 'kube-nginx' }, { unit: 'kube-lb' }],
});

describe('the static pod manifest', () => {
  it('is a host-network, node-critical Pod running the image with no pull, the config folder read-only, probes on nginx\'s status port', () => {
    const pod = YAML.parse(renderStaticPod(inv, REF));
    expect(pod).toMatchObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'kube-nginx-lb', namespace: 'kube-system' } });
    expect(pod.spec).toMatchObject({ hostNetwork: true, priorityClassName: 'system-node-critical', restartPolicy: 'Always' });
    const [c] = pod.spec.containers;
    expect(c).toMatchObject({ image: REF, imagePullPolicy: 'Never', command: ['/usr/sbin/kube-nginx', '-e', 'stderr', '-g', expect.stringMatching(/^daemon off; env K8S_HA_POD=[0-9a-f]{16};$/), '-c', '/etc/kube-nginx/kube-nginx.conf'] });
    // The node's own resolver: cluster DNS would need the apiserver this balancer serves.
    expect(pod.spec.dnsPolicy).toBe('Default');
    for (const probe of [c.livenessProbe, c.readinessProbe]) expect(probe.httpGet).toEqual({ host: '127.0.0.1', port: 8081, path: '/healthz' });
    expect(c.volumeMounts).toEqual([{ name: 'config', mountPath: '/etc/kube-nginx', readOnly: true }]);
    expect(pod.spec.volumes).toEqual([{ name: 'config', hostPath: { path: '/etc/kube-nginx', type: 'Directory' } }]);
    expect(manifestImage(renderStaticPod(inv, REF))).toBe(REF);
  });

  it("names the pod by its own content: another image or another probe port is another identity, the same inputs the same", () => {
    const id = (text: string) => /K8S_HA_POD=([0-9a-f]+)/.exec(text)![1];
    const a = id(renderStaticPod(inv, REF));
    expect(id(renderStaticPod(inv, REF))).toBe(a);
    expect(id(renderStaticPod(inv, `${REF}x`))).not.toBe(a);
    const other = inventorySchema.parse({ ...base, nginx: { version: '1.22.1', sources: ['https://nginx.org/download/nginx-1.22.1.tar.gz'], sha256: 'a'.repeat(64), statusListen: '127.0.0.1:8082' } });
    expect(id(renderStaticPod(other, REF))).not.toBe(a);
  });

  it('a site image (lb.image) may be pulled by kubelet when the node lacks it', () => {
    const site = inventorySchema.parse({ ...base, lb: { impl: 'static-pod', image: 'registry.example.com/lb/nginx:1.2' }, nginx: { version: '1.22.1', sources: ['https://nginx.org/download/nginx-1.22.1.tar.gz'], sha256: 'a'.repeat(64), statusListen: '127.0.0.1:8081' } });
    expect(YAML.parse(renderStaticPod(site, 'registry.example.com/lb/nginx:1.2')).spec.containers[0].imagePullPolicy).toBe('IfNotPresent');
  });

  it('without nginx.statusListen the inventory is refused at load, naming the field and the fix', () => {
    const bad = inventorySchema.parse({ ...base, nginx: { version: '1.22.1', sources: ['https://nginx.org/download/nginx-1.22.1.tar.gz'], sha256: 'a'.repeat(64) } });
    const errors = checkRules(bad).filter((d) => d.severity === 'error');
    expect(errors).toEqual([expect.objectContaining({ path: ['nginx', 'statusListen'], message: expect.stringMatching(/lb\.impl static-pod.*set nginx\.statusListen: 127\.0\.0\.1:8081/) })]);
  });
});

describe('the static pod step', () => {
  it('from a serving kube-nginx: stop it and wait for the port, then the manifest (moved last), the old unit disabled once verified', () => {
    const p = staticPod.plan(podArgs, facts({ files: { [STATIC_POD_MANIFEST]: null }, units: { 'kube-nginx': unit('active', 'enabled'), 'kube-lb': unit('inactive', 'disabled') } }), ctx(['reload']));
    expect(p.changes.map((c) => [c.kind, c.kind === 'run' ? c.label : c.path, c.kind === 'run' ? c.when : c.kind === 'put' ? c.late : undefined])).toEqual([
      ['run', 'switch from kube-nginx', undefined],
      ['put', STATIC_POD_MANIFEST, true],
      ['run', 'disable kube-nginx', 'verified'],
    ]);
    const sw = p.changes[0]!;
    expect(sw.kind === 'run' && sw.command).toMatch(/^systemctl stop --no-block kube-nginx; for i in .*:20FB 0\+:0000 0A/);
    expect(sw.kind === 'run' && sw.undo).toMatch(/systemctl is-active -q kube-nginx \|\| \{ .*systemctl start kube-nginx; \}$/);
  });

  it('a config change under a running pod is a reload of its nginx; an unchanged manifest and config is nothing', () => {
    const current = renderStaticPod(inv, REF);
    const same = { [STATIC_POD_MANIFEST]: { ...file, sha256: createHash('sha256').update(current).digest('hex') } };
    const reload = staticPod.plan(podArgs, facts({ files: same, units: { 'kube-nginx': unit('inactive', 'disabled') } }), ctx(['reload']));
    expect(reload.changes.map((c) => (c.kind === 'run' ? c.label : c.kind))).toEqual(['reload']);
    expect(reload.changes[0]!.kind === 'run' && reload.changes[0]!.command).toContain('kill -HUP');
    expect(staticPod.plan(podArgs, facts({ files: same }), ctx()).changes).toEqual([]);
  });

  it('a new image is a new manifest and no reload: kubelet replaces the pod, which reads the config anyway; a restore waits for the previous pod back', () => {
    const p = staticPod.plan(podArgs, facts({ files: { [STATIC_POD_MANIFEST]: file } }), ctx(['reload']));
    expect(p.changes.map((c) => c.kind)).toEqual(['put', 'run']);
    expect(p.summary).toBe(`write ${STATIC_POD_MANIFEST} (content changed), kubelet replaces the pod`);
    const waits = p.changes[1]!;
    expect(waits).toMatchObject({ kind: 'run', command: 'true', label: 'kubelet replaces the pod' });
    // The restore script runs the undo: up to 45 s for the pod the put-back manifest describes.
    const undo = waits.kind === 'run' ? waits.undo! : '';
    expect(undo).toContain('[ $i -ge 90 ]');
    const plan: HostPlan = {
      node: { name: 'n1' } as never,
      facts: facts({ files: { [STATIC_POD_MANIFEST]: file } }),
      steps: [{ step: { type: 'op', name: 'static pod', op: staticPod, args: podArgs } as never, plan: p }],
    };
    const restore = restoreScript(plan, { runId: 'r1', unit: 'kubelet' });
    // The previous manifest back first, then the wait; no unit restarted (kubelet acts on the file).
    expect(restore.indexOf(`mv -fT /etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-prev.r1 ${STATIC_POD_MANIFEST}`)).toBeGreaterThan(0);
    expect(restore.indexOf(undo)).toBeGreaterThan(restore.indexOf('.k8s-ha-prev.r1'));
    expect(restore).not.toMatch(/systemctl (restart|reload)/);
    // What the host reports: the pod of another manifest still serving, or nothing on the port.
    expect(podBackProblem('@@pod-back yes\n')).toBeUndefined();
    expect(podBackProblem('@@pod-back no 127.0.0.1:8443\n@@pod ours 42 - aaaa bbbb\n')).toBe(
      `kubelet has not brought back the pod of the previous manifest within 45 s: the pod on 127.0.0.1:8443 is the one of an earlier manifest (K8S_HA_POD aaaa), not the one ${STATIC_POD_MANIFEST} describes (bbbb): kubelet has not replaced it yet`,
    );
    expect(podBackProblem('@@pod-back no 127.0.0.1:8443\n@@pod none\n')).toMatch(/within 45 s: nothing listens on 127\.0\.0\.1:8443 yet/);
    // A first manifest (none before) has no previous pod to wait for: the restore removes it.
    expect(staticPod.plan(podArgs, facts({ files: { [STATIC_POD_MANIFEST]: null } }), ctx()).changes.map((c) => c.kind)).toEqual(['put']);
  });

  it('the host rolls only when a pod serves (its manifest in place) or a balancer is switched from', () => {
    const plan = (files: Record<string, unknown>, units: Record<string, unknown> = {}): HostPlan => {
      const f = facts({ files, units: { kubelet: unit('active', 'enabled'), ...units } });
      return { node: { name: 'n1' } as never, facts: f, steps: [{ step: { type: 'op', name: 'static pod', op: staticPod, args: podArgs } as never, plan: staticPod.plan(podArgs, f, ctx()) }] };
    };
    expect(disturbsRunningService(plan({ [STATIC_POD_MANIFEST]: null }), 'kubelet')).toBe(false);
    expect(disturbsRunningService(plan({ [STATIC_POD_MANIFEST]: file }), 'kubelet')).toBe(true);
    expect(disturbsRunningService(plan({ [STATIC_POD_MANIFEST]: null }, { 'kube-lb': unit('active', 'enabled') }), 'kubelet')).toBe(true);
  });

  it('the apply script moves the manifest after the switch command; a restore removes a new manifest and restarts no unit', () => {
    const f = facts({ files: { [STATIC_POD_MANIFEST]: null, '/etc/kube-nginx/kube-nginx.conf': null }, units: { 'kube-nginx': unit('active', 'enabled') } });
    const conf = { kind: 'put' as const, path: '/etc/kube-nginx/kube-nginx.conf', content: Buffer.from('x'), sha256: 'x', mode: '644' };
    const pod = staticPod.plan(podArgs, f, ctx());
    const plan: HostPlan = {
      node: { name: 'n1' } as never,
      facts: f,
      steps: [
        { step: { type: 'op', name: 'config', op: staticPod, args: {} } as never, plan: { changes: [conf], notify: [], summary: '' } },
        { step: { type: 'op', name: 'static pod', op: staticPod, args: podArgs } as never, plan: pod },
      ],
    };
    const script = applyScript(plan, { runId: 'r1', by: 'test', backup: true, unit: 'kubelet' });
    const at = (s: string) => script.indexOf(s);
    expect(at('mv -fT /etc/kube-nginx/kube-nginx.conf.k8s-ha-new.r1')).toBeGreaterThan(0);
    expect(at('mv -fT /etc/kube-nginx/kube-nginx.conf.k8s-ha-new.r1')).toBeLessThan(at('systemctl stop --no-block'));
    // Staged in kubelet's folder under a name it does not read (a leading dot), moved into place last.
    expect(at('systemctl stop --no-block')).toBeLessThan(at('mv -fT /etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-new.r1 /etc/kubernetes/manifests/kube-nginx.yaml'));
    expect(script).not.toMatch(/manifests\/kube-nginx\.yaml\.k8s-ha-(new|prev)/);
    const restore = restoreScript(plan, { runId: 'r1', unit: 'kubelet' });
    expect(restore).toContain(`elif [ -e ${STATIC_POD_MANIFEST} ]; then rm -f ${STATIC_POD_MANIFEST}`);
    expect(restore).toContain('systemctl start kube-nginx');
    expect(restore).not.toMatch(/systemctl (reload|restart) kubelet/);
  });
});

describe('a unit taking the port back from the static pod', () => {
  const args = service.args.parse({
    name: 'kube-nginx',
    replaces: [{ unit: 'kube-lb', listen: '127.0.0.1:8443', order: 'stop-first' }, { manifest: STATIC_POD_MANIFEST, aside: STATIC_POD_ASIDE, listen: '127.0.0.1:8443' }],
  });

  it('moves the manifest out of kubelet\'s folder, waits for the port, starts; removes the manifest only once verified; a rollback moves it back', () => {
    expect(service.facts(args)).toEqual({ units: ['kube-nginx', 'kube-lb'], files: [STATIC_POD_MANIFEST] });
    const p = service.plan(args, facts({ files: { [STATIC_POD_MANIFEST]: file }, units: { 'kube-nginx': unit('inactive', 'disabled'), 'kube-lb': unit('inactive', 'disabled') } }), ctx(['daemon-reload']));
    expect(p.changes.map((c) => (c.kind === 'run' ? [c.label, c.when] : c.kind))).toEqual([
      ['daemon-reload', undefined],
      ['switch from the static pod', undefined],
      ['remove the static pod manifest', 'verified'],
    ]);
    const sw = p.changes[1]!;
    if (sw.kind !== 'run') throw new Error('not a run');
    // Aside in the same folder under a dot name (kubelet does not read it); the unit enabled with the switch, so a reboot before verify still starts a balancer.
    expect(STATIC_POD_ASIDE).toBe('/etc/kubernetes/manifests/.kube-nginx.yaml.k8s-ha-aside');
    expect(sw.command).toMatch(new RegExp(`^mv -fT ${STATIC_POD_MANIFEST} ${STATIC_POD_ASIDE} && systemctl enable -q --no-reload kube-nginx && \\{ for i in .*; systemctl restart kube-nginx; \\}$`));
    expect(sw.switchFrom).toBe('kubelet');
    expect(sw.undo).toMatch(new RegExp(`^systemctl stop kube-nginx; systemctl disable -q --no-reload kube-nginx; .*if \\[ -e ${STATIC_POD_ASIDE} \\]; then mv -fT ${STATIC_POD_ASIDE} ${STATIC_POD_MANIFEST}; fi; ok=0; .*the static pod did not become ready`));
  });

  it('no manifest in place: the other balancers are replaced as before', () => {
    const p = service.plan(args, facts({ files: { [STATIC_POD_MANIFEST]: null }, units: { 'kube-nginx': unit('inactive', 'disabled'), 'kube-lb': unit('active', 'enabled') } }), ctx());
    expect(p.changes.find((c) => c.kind === 'run' && c.switchFrom)).toMatchObject({ label: 'switch from kube-lb', switchFrom: 'kube-lb' });
  });
});

describe('which image the pod runs, and the image step', () => {
  it('is read from the manifest in place: a loaded image the pod does not run yet is checked before it moves there', () => {
    const ref = REF;
    const args = image.args.parse({ source: 'artifact:kube-nginx-image', repository: 'localhost/k8s-ha/kube-nginx', runtime: 'podman', archive: '/var/lib/k8s-ha/images/kube-nginx.tar', manifest: STATIC_POD_MANIFEST, validate: 'check' });
    expect(image.facts(args)).toEqual({ images: ['localhost/k8s-ha/kube-nginx'], texts: [STATIC_POD_MANIFEST], kubelet: true });
    const c = { notified: new Set<never>(), artifacts: { 'kube-nginx-image': { content: Buffer.from('x'), sha256: 'x', ref, describe: 'img' } }, render: () => '' };
    const loaded = { 'localhost/k8s-ha/kube-nginx': [`podman ${ref}`] };
    const old = renderStaticPod(inv, 'localhost/k8s-ha/kube-nginx:1.22.1-000000000000');
    expect(image.plan(args, facts({ texts: { [STATIC_POD_MANIFEST]: old }, images: loaded } as never), c).changes.map((x) => x.kind === 'run' && x.when)).toEqual(['validate']);
    expect(image.plan(args, facts({ texts: { [STATIC_POD_MANIFEST]: renderStaticPod(inv, ref) }, images: loaded } as never), c).changes).toEqual([]);
  });

  const autoArgs = image.args.parse({ source: 'artifact:kube-nginx-image', repository: 'localhost/k8s-ha/kube-nginx', runtime: 'auto', archive: '/var/lib/k8s-ha/images/kube-nginx.tar', manifest: STATIC_POD_MANIFEST, validate: 'check' });
  const built = { notified: new Set<never>(), artifacts: { 'kube-nginx-image': { content: Buffer.from('x'), sha256: 'x', ref: REF, describe: 'img' } }, render: () => '' };
  const onNode = (tools: string[], kubelet?: { endpoint: string; snapshotter?: string }, images: string[] = []) =>
    ({ ...facts({}), tools, ...(kubelet ? { kubelet } : {}), images: { 'localhost/k8s-ha/kube-nginx': images } }) as HostFacts;

  it("kubelet on containerd (its CRI endpoint): imported into containerd's k8s.io namespace, unpacked into the CRI plugin's snapshotter, containerd started if it is not", () => {
    const p = image.plan(autoArgs, onNode(['ctr', 'podman', 'docker'], { endpoint: 'unix:///run/containerd/containerd.sock', snapshotter: 'native' }), built);
    expect(p.summary).toMatch(/^load localhost\/k8s-ha\/kube-nginx:1\.22\.1-0123456789ab into containerd /);
    const put = p.changes.find((x) => x.kind === 'put')!;
    expect(put.kind === 'put' && put.validate).toBe(
      "{ systemctl is-active -q containerd || systemctl start containerd; } && timeout 600 ctr -n k8s.io images import --snapshotter native /var/lib/k8s-ha/images/kube-nginx.tar >/dev/null",
    );
    const prune = p.changes.find((x) => x.kind === 'run' && x.when === 'verified')!;
    expect(prune.kind === 'run' && prune.command).toBe(
      `{ timeout 60 ctr -n k8s.io images ls -q | grep -F localhost/k8s-ha/kube-nginx: | grep -vxF ${REF} | while read -r old; do timeout 60 ctr -n k8s.io images rm "$old" >/dev/null 2>&1; done; true; }`,
    );
    // Already there (containerd's listing, as facts give it): nothing to load, the check only when the pod runs another image.
    expect(image.plan(autoArgs, onNode(['ctr'], { endpoint: 'unix:///run/containerd/containerd.sock' }, [`containerd ${REF} localhost/k8s-ha/kube-nginx@sha256:${'c'.repeat(64)}`]), built).changes.map((x) => x.kind)).toEqual(['run']);
  });

  it('auto follows kubelet, not the tools on the PATH: CRI-O is podman\'s storage, cri-dockerd is Docker; no endpoint named is kubelet\'s default, containerd', () => {
    expect(resolveRuntime('auto', ['ctr', 'podman', 'docker'], { endpoint: 'unix:///var/run/crio/crio.sock' })).toBe('podman');
    expect(resolveRuntime('auto', ['ctr', 'podman', 'docker'], { endpoint: 'unix:///run/cri-dockerd.sock' })).toBe('docker');
    expect(resolveRuntime('auto', ['ctr', 'podman', 'docker'], { endpoint: '' })).toBe('containerd');
    expect(resolveRuntime('auto', ['podman'], { endpoint: '' })).toBe('podman');
    // lb.impl container (no kubelet): podman, then docker, never containerd.
    expect(resolveRuntime('auto', ['ctr', 'docker'])).toBe('docker');
    expect(resolveRuntime('auto', ['ctr'])).toBeUndefined();
    const unknown = image.plan(autoArgs, onNode(['ctr', 'podman'], { endpoint: 'unix:///run/other.sock' }), built);
    expect(unknown.summary).toBe(
      'kubelet runs pods through unix:///run/other.sock, which k8s-ha cannot load an image into (it can: containerd, CRI-O through podman, cri-dockerd through docker): set lb.runtime, or lb.image to an image kubelet can pull',
    );
    expect(unknown.changes).toMatchObject([{ kind: 'run', when: 'staging', label: 'find a container runtime' }]);
    const noCtr = image.plan(image.args.parse({ ...autoArgs, runtime: 'containerd' }), onNode(['podman'], { endpoint: '' }), built);
    expect(noCtr.summary).toBe('lb.runtime is containerd, but this node has no ctr (containerd) on its PATH: install it, or set lb.runtime to the runtime the node has');
  });

  it("kubelet's endpoint is read from its command line, else its config file, else kubeadm's flags file; containerd's snapshotter from its CRI plugin", () => {
    const req = { ...emptyRequest(), kubelet: true };
    expect(factScript(req)).toContain('@@kubelet');
    expect(factScript(emptyRequest())).not.toContain('@@kubelet');
    expect(parseFacts(req, '@@kubelet\nendpoint=unix:///run/containerd/containerd.sock\nsnapshotter=native\n').kubelet).toEqual({ endpoint: 'unix:///run/containerd/containerd.sock', snapshotter: 'native' });
    expect(parseFacts(req, '@@kubelet\nendpoint=\n').kubelet).toEqual({ endpoint: '' });
    // The script itself, against files laid out as kubeadm does, with no kubelet running.
    const dir = mkdtempSync(join(tmpdir(), 'kubelet-fact-'));
    const run = (files: Record<string, string>) => {
      for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
      const script = KUBELET_FACT_SCRIPT.replaceAll('/var/lib/kubelet/', `${dir}/`).replace('systemctl show -p MainPID --value kubelet', 'echo 0');
      return spawnSync('sh', ['-c', `PATH=/nonexistent:$PATH; ${script}`], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith('endpoint='))[0];
    };
    expect(run({ 'kubeadm-flags.env': 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/crio/crio.sock --pod-infra-container-image=registry.k8s.io/pause:3.9"\n' })).toBe('endpoint=unix:///var/run/crio/crio.sock');
    expect(run({ 'config.yaml': 'kind: KubeletConfiguration\ncontainerRuntimeEndpoint: "unix:///run/containerd/containerd.sock"\n' })).toBe('endpoint=unix:///run/containerd/containerd.sock');
  });

  it('lb.runtime containerd with lb.impl container is refused at load: containerd runs kubelet\'s pods, not a unit\'s container', () => {
    const bad = inventorySchema.parse({ ...base, lb: { impl: 'container', runtime: 'containerd' }, nginx: inv.nginx });
    expect(checkRules(bad).filter((d) => d.severity === 'error')).toEqual([
      expect.objectContaining({ path: ['lb', 'runtime'], message: expect.stringMatching(/^is containerd, .* every node runs lb\.impl container .* set lb\.runtime to podman, docker or auto there, or lb\.impl to static-pod$/) }),
    ]);
    expect(checkRules(inventorySchema.parse({ ...base, lb: { impl: 'static-pod', runtime: 'containerd' }, nginx: inv.nginx })).filter((d) => d.severity === 'error')).toEqual([]);
  });
});

describe("the pod's nginx master, told by its socket", () => {
  it('a listener in the host\'s own PID namespace is another process, named; a free port is none', async () => {
    const server = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const run = (p: number) => spawnSync('sh', ['-c', podMasterScript(`127.0.0.1:${p}`)], { encoding: 'utf8' }).stdout;
      const held = parsePodMaster(run(port));
      expect(held).toEqual({ state: 'other', who: expect.stringMatching(new RegExp(`^${process.pid} \\S+`)) });
      expect(podProblem(held, `127.0.0.1:${port}`)).toMatch(new RegExp(`^127\\.0\\.0\\.1:${port} is held by another process \\(pid ${process.pid}, .*\\), not by the static pod`));
      server.close();
      await new Promise((r) => server.once('close', r));
      expect(parsePodMaster(run(port))).toEqual({ state: 'none' });
    } finally {
      server.close();
    }
  });

  it("the runtime's own view: the pod's nginx must be the first process of a container it runs", () => {
    // Each runtime's CLI as a stand-in on the PATH, answering as the real one prints.
    const dir = mkdtempSync(join(tmpdir(), 'pod-rt-'));
    const fake = (name: string, out: string) => writeFileSync(join(dir, name), `#!/bin/sh\nprintf '%s' '${out}'\n`, { mode: 0o755 });
    const ask = (rt: 'containerd' | 'podman' | 'docker', pid: number) =>
      spawnSync('sh', ['-c', `master=${pid}\n${podRuntimeScript(rt)}`], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` } }).stdout;
    fake('ctr', 'TASK             PID     STATUS\nkube-nginx-lb    4242    RUNNING\nother            77      STOPPED\n');
    expect(ask('containerd', 4242)).toBe('@@pod-rt kube-nginx-lb RUNNING (ctr -n k8s.io task ls)\n');
    expect(podRuntimeProblem(ask('containerd', 4242), 'containerd', 4242)).toBeUndefined();
    expect(podRuntimeProblem(ask('containerd', 77), 'containerd', 77)).toBe("containerd shows the pod's container other STOPPED, not running (ctr -n k8s.io task ls)");
    expect(podRuntimeProblem(ask('containerd', 5), 'containerd', 5)).toBe("containerd runs no container whose first process is the pod's nginx (pid 5; ctr -n k8s.io task ls)");
    fake('podman', '4242 kube-nginx-lb-nginx\n');
    expect(podRuntimeProblem(ask('podman', 4242), 'podman', 4242)).toBeUndefined();
    expect(podRuntimeProblem(ask('podman', 9), 'podman', 9)).toMatch(/^podman runs no container whose first process/);
    // On a CRI-O node podman lists none of kubelet's containers: no answer, not a failure.
    expect(podRuntimeProblem('@@pod-rt unseen cri-o (podman ps)\n', 'podman', 9)).toBeUndefined();
    expect(podRuntimeProblem('', 'docker', 9)).toBe("docker could not be asked which container runs the pod's nginx (pid 9)");
  });

  it('the pod\'s master: the pod the manifest in place describes, running the image\'s binary', () => {
    const ours = parsePodMaster(`@@pod ours 4242 ${'b'.repeat(64)} 0123456789abcdef 0123456789abcdef\n`);
    expect(ours).toEqual({ state: 'ours', pid: 4242, sha256: 'b'.repeat(64), id: '0123456789abcdef', want: '0123456789abcdef' });
    expect(podProblem(ours, '127.0.0.1:8443', 'b'.repeat(64))).toBeUndefined();
    expect(podProblem(ours, '127.0.0.1:8443', 'c'.repeat(64))).toMatch(/runs another nginx binary \(sha256 bbbbbbbbbbbb\), not the image's \(cccccccccccc\)/);
    // lb.image: no binary to compare; the identity still tells an old pod from the new one.
    expect(podProblem(ours, '127.0.0.1:8443', undefined)).toBeUndefined();
    const old = parsePodMaster(`@@pod ours 4242 - fedcba9876543210 0123456789abcdef`);
    expect(podProblem(old, '127.0.0.1:8443')).toMatch(/is the one of an earlier manifest \(K8S_HA_POD fedcba9876543210\), not the one .* describes \(0123456789abcdef\): kubelet has not replaced it yet/);
    expect(podProblem(parsePodMaster('@@pod ours 4242 - - -'), '127.0.0.1:8443')).toMatch(/names no K8S_HA_POD/);
    expect(podProblem(parsePodMaster('@@pod none'), '127.0.0.1:8443')).toMatch(/kubelet has not started the static pod/);
    // Who listens cannot be told (no ss): not verified.
    expect(podProblem(parsePodMaster('@@pod unknown'), '127.0.0.1:8443')).toMatch(/cannot be told on this node/);
  });
});
