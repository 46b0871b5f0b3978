/**
 * A static pod: its manifest in kubelet's folder, which kubelet starts, replaces (when the manifest
 * changes) and stops (when it goes). The manifest is the last file a commit moves into place: a node
 * switching from another balancer stops that one first and waits until the port is free, so the
 * pod's nginx binds at its first try instead of crashing into kubelet's back-off. A config change
 * alone (notified `reload`) is a HUP to the pod's nginx master; a new manifest needs none.
 */
import { z } from 'zod';
import { nodePath } from '../inventory/schema.js';
import { podBackScript, podReloadScript } from '../lb/static-pod.js';
import { noop, type Change, type Operation } from './types.js';
import { addressPort, unitName, waitPortFree, waitPortFreed } from './service.js';
import { planPut } from './files.js';
import { isServing } from '../facts/host.js';
import { quote } from '../util/quote.js';

type StaticPodArgs = { manifest: string; template: string; listen: string; replaces: { unit: string }[] };

export const staticPod: Operation<StaticPodArgs> = {
  type: 'staticPod',
  args: z.strictObject({
    manifest: nodePath('/etc/kubernetes/manifests/kube-nginx.yaml'),
    template: z.string(),
    /** The port the pod's nginx listens on: the old balancer lets go of it first, and a reload finds the master by it. */
    listen: addressPort,
    /** The balancers this pod takes the port from (systemd units): stopped first, disabled once the pod is verified. */
    replaces: z.array(z.strictObject({ unit: unitName })).default([]),
  }),
  facts: (a) => ({ files: [a.manifest], units: a.replaces.map((r) => r.unit) }),
  plan(a, facts, ctx) {
    const put = planPut(a.manifest, Buffer.from(ctx.render(a.template, facts)), '0644', facts, ctx, { notify: [], text: true, what: 'write' });
    const manifestChanges = put.changes.length > 0;
    const changes: Change[] = put.changes.map((c) => (c.kind === 'put' ? { ...c, late: true } : c));
    // The balancer serving now, which lets go of the port before the manifest goes in.
    const old = a.replaces.find((r) => isServing(facts.units[r.unit] as never));
    if (old) {
      const u = quote(old.unit);
      changes.unshift({
        kind: 'run',
        // The manifest goes into place after this (a late put): kubelet starts the pod on a free port.
        command: `systemctl stop --no-block ${u}; ${waitPortFreed(a.listen, old.unit)}`,
        label: `switch from ${old.unit}`,
        switchFrom: old.unit,
        // The restore has taken the manifest away (the pod stops as kubelet sees it): the old unit takes the port back.
        undo: `systemctl is-active -q ${u} || { ${waitPortFree(a.listen)}; systemctl start ${u}; }`,
      });
    }
    // A new manifest for a pod that serves now (a new image): kubelet replaces the pod. A restore puts
    // the previous manifest back, and kubelet replaces the pod again: the restore waits for that pod.
    if (manifestChanges && !old && facts.files[a.manifest]) {
      changes.push({ kind: 'run', command: 'true', label: 'kubelet replaces the pod', undo: podBackScript(a.listen, a.manifest) });
    }
    // Which balancer starts at boot changes once the pod is verified; an interrupted switch leaves the old one enabled.
    for (const r of a.replaces) {
      if (facts.units[r.unit]?.unitFileState === 'enabled') changes.push({ kind: 'run', command: `systemctl disable -q --no-reload ${quote(r.unit)}`, label: `disable ${r.unit}`, when: 'verified' });
    }
    // A config change under a pod that stays: nginx reloads it. A new manifest starts a pod that reads it anyway.
    if (!manifestChanges && ctx.notified.has('reload')) changes.push({ kind: 'run', command: podReloadScript(a.listen), label: 'reload' });
    if (!changes.length) return noop(`${a.manifest} up to date`);
    const said = [put.summary, ...changes.filter((c) => c.kind === 'run').map((c) => (c.kind === 'run' ? c.label : ''))].filter((s) => s && !s.endsWith('up to date'));
    return { changes, notify: [], summary: said.join(', ') };
  },
};
