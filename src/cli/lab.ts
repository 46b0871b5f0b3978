/** `k8s-ha lab up | prepare | down | status | master`: parse, call, render. The lab's modules load on demand: `deploy` never pays for them. */
import { colour } from './colour.js';
import { Command, InvalidArgumentError } from 'commander';
import type { LabUpContext } from '../lab/lab.js';
import { APISERVER_PORT, labSubnet6, LOCAL_LB, MASTER_ACTIONS, MAX_LAB_HOSTS, masterActionValue, nodeOs, type MasterAction } from '../lab/topology.js';
import { displayPath as rel } from '../util/paths.js';
import { runSteps, table } from './ui.js';

function count(what: string) {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1 || n > MAX_LAB_HOSTS) {
      throw new InvalidArgumentError(`${what} must be a whole number from 1 to ${MAX_LAB_HOSTS}.`);
    }
    return n;
  };
}

function runtimeCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > MAX_LAB_HOSTS) throw new InvalidArgumentError(`--runtime must be a whole number of nodes from 0 to ${MAX_LAB_HOSTS}.`);
  return n;
}

export function labCommand(setExit: (code: number) => void): Command {
  const lab = new Command('lab').description(
    'a throwaway cluster on the local Docker engine: systemd+sshd nodes, and systemd+sshd masters whose kube-apiserver is a stand-in',
  );

  lab
    .command('up')
    .description('start the lab (or check that it is up), write its inventory')
    .option('--nodes <n>', 'node containers (systemd + sshd); default 3, or the size of the lab already in --dir', count('--nodes'))
    .option('--masters <m>', 'master containers (systemd + sshd + an apiserver stand-in); default 3, or the size of the lab already in --dir', count('--masters'))
    .option('--dir <dir>', 'lab directory: keys, certificates, inventory', '.lab')
    .option('--subnet <cidr>', 'IPv4 /16 for the lab network (default: the first free of 10.210-249.0.0/16)')
    .option('--bastion', 'add a bastion host (A.B.0.20) and make the nodes reachable only through it; default: what the lab in --dir has')
    .option('--keep-direct', 'with --bastion: the nodes stay reachable directly too')
    .option('--os <releases>', 'the nodes\' Debian releases, in turn (node-1 the first...): bookworm, bullseye, trixie, or a list such as bookworm,bullseye,trixie; default bookworm, or what the lab in --dir has')
    .option('--masters-os <release>', 'the masters\' Debian release: bookworm, bullseye or trixie; default bookworm, or what the lab in --dir has')
    .option('--runtime <n>', 'how many nodes (node-1 up) get a container runtime: podman and docker (vfs storage) and a kubelet stand-in running /etc/kubernetes/manifests with podman kube play; 0 to the node count, default 0 or what the lab in --dir has', runtimeCount)
    .option('--json', 'print only {"inventory","kubeconfig","kubectl","nodes","masters"} (and "bastion" with one) as JSON on stdout')
    .action(async (o: { nodes?: number; masters?: number; dir: string; subnet?: string; bastion?: boolean; keepDirect?: boolean; os?: string; mastersOs?: string; runtime?: number; json?: boolean }) => {
      const { labUpSteps, prepareLabUp } = await import('../lab/lab.js');
      const ctx = await prepareLabUp({
        dir: o.dir,
        nodes: o.nodes,
        masters: o.masters,
        subnet: o.subnet,
        bastion: o.bastion,
        keepDirect: o.keepDirect,
        os: o.os?.split(',').map((x) => x.trim()),
        mastersOs: o.mastersOs,
        runtime: o.runtime,
      });
      await runSteps(labUpSteps(), ctx, { json: !!o.json });
      if (o.json) {
        process.stdout.write(JSON.stringify(labJson(ctx)) + '\n');
        return;
      }
      printLabUp(ctx);
    });

  lab
    .command('prepare')
    .description('build the images and write the lab files for docker-compose.test.yml, start nothing')
    .option('--dir <dir>', 'lab directory', '.lab')
    .action(async (o: { dir: string }) => {
      const { labUpSteps, prepareLabUp } = await import('../lab/lab.js');
      const ctx = await prepareLabUp({ dir: o.dir, nodes: 3, masters: 3, prepareOnly: true });
      await runSteps(labUpSteps(), ctx, { json: false });
      process.stdout.write(
        `Images and files ready in ${rel(ctx.paths!.dir)}. Start the lab with:\n  docker-compose -f docker-compose.test.yml -p k8s-ha up -d\n`,
      );
    });

  lab
    .command('down')
    .description('remove the lab: its containers, its network and its files (images stay cached)')
    .option('--dir <dir>', 'lab directory', '.lab')
    .action(async (o: { dir: string }) => {
      const { labDown } = await import('../lab/lab.js');
      const r = await labDown(o.dir);
      if (!r.containers.length && !r.network && !r.files) {
        process.stdout.write(`No lab in ${o.dir}: nothing to remove.\n`);
        return;
      }
      process.stdout.write(
        `Removed lab ${r.id}: ${r.containers.length} container${r.containers.length === 1 ? '' : 's'}` +
          `${r.network ? ', its network' : ''}${r.files ? `, its files in ${o.dir}` : ''}.\n` +
          'Images k8s-ha-lab-* stay as a cache (docker image rm them to reclaim space).\n',
      );
    });

  lab
    .command('status')
    .description("each lab host's container and health")
    .option('--dir <dir>', 'lab directory', '.lab')
    .option('--json', 'JSON on stdout')
    .action(async (o: { dir: string; json?: boolean }) => {
      const { labStatus } = await import('../lab/lab.js');
      const s = await labStatus(o.dir);
      const healthy = s.hosts.every((h) => h.ok);
      if (o.json) {
        const bastion = s.bastion ? { bastion: s.bastion, bastionInventory: s.paths.bastionInventory, isolated: s.isolated } : {};
        process.stdout.write(JSON.stringify({ id: s.state.id, subnet: s.state.subnet, subnet6: labSubnet6(s.state.subnet), inventory: s.paths.inventory, inventory6: s.paths.inventory6, ...bastion, healthy, hosts: s.hosts }) + '\n');
      } else {
        process.stdout.write(`Lab ${s.state.id} in ${rel(s.paths.dir)} (${s.state.subnet}, ${labSubnet6(s.state.subnet)})\n`);
        if (s.bastion) {
          process.stdout.write(
            `Bastion ${s.bastion.name} (${s.bastion.address}): nodes reachable ${s.isolated ? 'only through it' : 'through it and directly'}\n`,
          );
        }
        process.stdout.write(
          table([
            ['HOST', 'ROLE', 'ADDRESS', 'IPV6', 'CONTAINER', 'HEALTH'],
            ...s.hosts.map((h) => [h.service, h.role, h.address, h.address6, h.container, h.ok ? colour.green(h.detail) : colour.red(h.detail || 'down')]),
          ]) + '\n',
        );
      }
      if (!healthy) setExit(3);
    });

  lab
    .command('master')
    .description(
      'fail or restore a master: ready/unready turn its /readyz green/red; readyz-flood makes it answer 200 and a body that never ends (ready undoes it); anonymous-off/anonymous-on make it answer 401 to requests ' +
        'without a client certificate of the lab CA (as --anonymous-auth=false) or serve them again; lag MS puts its watch cache MS behind etcd ' +
        '(watches see events MS late, a read at a newer resourceVersion waits up to 3 s, then 504; 0: in step); crash/recover make its apiserver stop/resume listening ' +
        '(connections refused, process and host up); stop/start its kube-apiserver service (SIGTERM: /readyz red, served 5 s more, then GOAWAY, watches ended, requests drained, connections refused; ' +
        'the host up, SSH works); freeze/thaw the whole host (hung: no answer, no reset, but its kernel still completes handshakes); ' +
        'partition/heal the whole host (every packet to and from it dropped: no handshake, no reset, no ICMP, no ARP answer; kept in lab.json); ' +
        'down/up the whole host (container stopped: nothing answers; up waits until SSH and /readyz answer again); ' +
        'power-off/power-on the whole host (partitioned, then killed: it vanishes mid-connection without FIN or reset; kept in lab.json; ' +
        'power-on waits as up does)',
    )
    .argument('<name>', 'a master of the lab, e.g. master-1')
    .argument('<action>', MASTER_ACTIONS.join(' | '))
    .argument('[ms]', 'with lag: how far its watch cache is behind, in ms (0: in step)')
    .option('--dir <dir>', 'lab directory', '.lab')
    .action(async (name: string, action: string, value: string | undefined, o: { dir: string }) => {
      if (!(MASTER_ACTIONS as readonly string[]).includes(action)) {
        throw new InvalidArgumentError(`action must be ${MASTER_ACTIONS.slice(0, -1).join(', ')} or ${MASTER_ACTIONS.at(-1)}, got "${action}".`);
      }
      let lagMs: number | undefined;
      try {
        lagMs = masterActionValue(action as MasterAction, value);
      } catch (e) {
        throw new InvalidArgumentError(`${(e as Error).message}.`);
      }
      const { controlMaster } = await import('../lab/control.js');
      process.stdout.write((await controlMaster(o.dir, name, action as MasterAction, lagMs)) + '\n');
    });

  return lab;
}

function labJson(ctx: LabUpContext) {
  // The Debian release of each node, for a lab of more than one (lab up --os).
  const plan = ctx.plan!;
  const bastion = plan.containers.find((c) => c.role === 'bastion');
  return {
    inventory: ctx.paths!.inventory,
    inventory6: ctx.paths!.inventory6,
    kubeconfig: ctx.paths!.kubeconfig,
    kubectl: ctx.paths!.kubectl,
    nodes: plan.containers.filter((c) => c.role === 'node').map((c, i) => ({ name: c.service, address: c.address, address6: c.address6, ...(ctx.options.os ? { os: nodeOs(ctx.options.os, i + 1) } : {}), ...(i < ctx.options.runtime ? { runtime: true } : {}) })),
    masters: plan.containers.filter((c) => c.role === 'master').map((c) => ({ name: c.service, address: c.address, address6: c.address6, port: APISERVER_PORT })),
    ...(bastion
      ? {
          bastion: { name: bastion.service, address: bastion.address },
          bastionInventory: ctx.paths!.bastionInventory,
          /** The nodes answer only through the bastion (inventory.yaml goes through it too). */
          isolated: ctx.options.isolated,
        }
      : {}),
  };
}

function printLabUp(ctx: LabUpContext): void {
  const p = ctx.paths!;
  const out: string[] = [];
  const where = rel(p.dir);
  out.push(
    ctx.existing && ctx.changes.length === 0
      ? `Lab ${ctx.id} is already up in ${where}: nothing changed.`
      : `Lab ${ctx.id} is up in ${where}: ${ctx.changes.join(', ') || 'converged'}.`,
  );
  out.push(
    table([
      ['HOST', 'ROLE', 'ADDRESS', 'HEALTH'],
      ...ctx.health.map((h) => [h.service, h.role, h.address, h.ok ? colour.green(h.detail) : colour.red(h.detail)]),
    ]),
  );
  const first = ctx.plan!.containers.find((c) => c.role === 'node')!;
  const bastion = ctx.plan!.containers.find((c) => c.role === 'bastion');
  const direct = `ssh -i ${rel(p.identityFile)} -o UserKnownHostsFile=${rel(p.knownHosts)} -o StrictHostKeyChecking=yes`;
  if (!bastion) {
    out.push(`Inventory: ${rel(p.inventory)}`);
    out.push(`           ${rel(p.inventory6)} (every host by its IPv6 address)`);
    out.push(`Log in:    ${direct} root@${first.address}`);
  } else {
    const isolated = ctx.options.isolated;
    out.push(`Inventory: ${rel(p.inventory)}${isolated ? ' (through the bastion: the nodes answer nothing else)' : ' (direct)'}`);
    out.push(`           ${rel(p.bastionInventory)} (through the bastion)`);
    out.push(`           ${rel(p.inventory6)} (every host by its IPv6 address${isolated ? ', through the bastion' : ''})`);
    out.push(`Bastion:   ${bastion.service} ${bastion.address}; host certificate from the lab's SSH CA (${rel(p.certAuthorityKnownHosts)})`);
    // ssh -J runs a second ssh for the jump and passes it -F, not -i or -o: the lab's ssh_config carries both.
    out.push(`Log in:    ssh -F ${rel(p.sshConfig)} -J root@${bastion.address} root@${first.address}`);
    if (!isolated) out.push(`           ${direct} root@${first.address}`);
  }
  // Masters are hosts too, never behind the bastion: the same key and known_hosts reach them directly.
  const master = ctx.plan!.containers.find((c) => c.role === 'master');
  if (master) out.push(`Masters:   ${direct} root@${master.address} systemctl status kube-apiserver`);
  out.push(`IPv6:      ${ctx.plan!.network.subnet6}, each host's address ending as its IPv4 one does (${first.service} ${first.address6})`);
  // A real client: on every host through its 127.0.0.1:8443 (once deployed), from here straight to a master.
  out.push(`kubectl:   on every host, \`kubectl get pods\` goes through its ${LOCAL_LB} (once k8s-ha has deployed there)`);
  if (master) out.push(`           ${rel(p.kubectl)} --kubeconfig ${rel(p.kubeconfig)} --server https://${master.address}:${APISERVER_PORT} get pods`);
  process.stdout.write(out.join('\n') + '\n');
}
