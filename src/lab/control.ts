/**
 * Fail a lab master the ways a real one fails, and restore it: how tests and
 * demos take an apiserver away. A master is a host (systemd, sshd) whose
 * kube-apiserver service is the stand-in, so each action names what it hits:
 *   ready | unready    the stand-in's /readyz answers 200 | 500 (its control port)
 *   readyz-flood       its /readyz answers 200 and a body that never ends (`ready` undoes it)
 *   anonymous-off | anonymous-on
 *                      the stand-in answers 401 | serves a request without a client certificate of
 *                      the lab CA (pki/lab-readyz.crt is one), as kube-apiserver --anonymous-auth=false
 *   lag MS             the stand-in's watch cache MS behind etcd (its clock); 0: in step
 *   crash | recover    the stand-in stops | resumes listening on :6443, its process alive
 *   stop | start       `systemctl stop | start kube-apiserver`: SIGTERM, and kube-apiserver's shutdown
 *                      sequence (/readyz red, everything served for the delay, then GOAWAY, watches
 *                      ended, in-flight requests drained), then connections refused; the host stays up
 *   freeze | thaw      the whole host paused | resumed: no answer, no FIN, no reset, but its kernel
 *                      still completes TCP handshakes (a hung host, not a silent one)
 *   partition | heal   every packet to and from the host dropped | let through again: no handshake, no
 *                      reset, no ICMP, no ARP answer (see partition.ts); recorded in lab.json
 *   down | up          the whole host gone (container stopped: its processes close their connections
 *                      on the way) | back: booted, SSH and /readyz answer
 *   power-off | power-on
 *                      the host vanishes mid-connection: partitioned first, so nothing it sends on the
 *                      way down leaves it, then killed; recorded in lab.json | started again (a fresh
 *                      network namespace, so healed) and healthy, as `up`
 */
import fs from 'node:fs/promises';
import http from 'node:http';
import { EnvironmentError, UsageError } from '../errors.js';
import { docker, labContainers } from './docker.js';
import { labPaths } from './files.js';
import { probeMaster, waitForMaster } from './health.js';
import { applyPartition } from './partition.js';
import { planOfState, readState, setMasterFault, type LabState } from './state.js';
import { STANDIN_CONTROL_PORT, type LabContainer, type MasterAction } from './topology.js';

/** The systemd unit of the stand-in in the master image. */
export const APISERVER_UNIT = 'kube-apiserver';

/** How long `start` waits for the stand-in to answer /readyz, and `up` for the host to boot and answer SSH and /readyz. */
const START_TIMEOUT_MS = 30_000;
const UP_TIMEOUT_MS = 60_000;

interface FoundMaster {
  master: LabContainer;
  /** The lab's directory, as lab.json records it. */
  dir: string;
  state: LabState;
}

async function findMaster(dir: string, name: string): Promise<FoundMaster> {
  const state = await readState(dir);
  if (!state) throw new UsageError(`no lab in ${dir}`, { hint: `start one with \`k8s-ha lab up --dir ${dir}\`` });
  const plan = planOfState(state, dir);
  const m = plan.containers.find((c) => c.role === 'master' && c.service === name);
  if (!m) {
    const names = plan.containers.filter((c) => c.role === 'master').map((c) => c.service);
    throw new UsageError(`the lab has no master named ${name}`, { hint: `use one of: ${names.join(', ')}` });
  }
  return { master: m, dir: state.dir, state };
}

export async function controlMaster(dir: string, name: string, action: MasterAction, lagMs?: number): Promise<string> {
  const { master: m, dir: labDir, state } = await findMaster(dir, name);
  const who = `${name} (${m.address})`;
  const fault = state.faults?.[name];
  if (fault === 'powered-off' && action !== 'power-on' && action !== 'up' && action !== 'power-off') {
    throw new UsageError(`${who} is powered off: \`${action}\` needs it running`, {
      hint: `power it on first: k8s-ha lab master ${name} power-on --dir ${dir}`,
    });
  }
  if (action === 'partition' || action === 'heal') {
    const changed = await applyPartition(m, action === 'partition');
    await setMasterFault(dir, name, action === 'partition' ? 'partitioned' : undefined);
    if (action === 'heal') return `${who} healed: packets to and from it flow again${changed ? '' : ' (it was not partitioned)'}`;
    return `${who} partitioned: every packet to and from it is dropped, no handshake, no reset, no ICMP, no ARP answer${changed ? '' : ' (it was already)'}`;
  }
  if (action === 'power-off') {
    const running = (await labContainers(state.id)).some((c) => c.name === m.name && c.running);
    if (running) {
      // The partition first: what the kernel sends while the host dies (FIN, RST to its peers) goes nowhere.
      await applyPartition(m, true);
      await docker(['kill', m.name], { step: `powering ${name} off` });
    }
    await setMasterFault(dir, name, 'powered-off');
    return `${who} powered off: it vanished mid-connection (no FIN, no reset), nothing answers at its address, not even ARP`;
  }
  if (action === 'freeze' || action === 'thaw') {
    // docker pause: every process of the host stops dead; its TCP peers get no FIN and no RST.
    await docker([action === 'freeze' ? 'pause' : 'unpause', m.name], { step: `${action} ${name}` });
    return action === 'freeze'
      ? `${who} frozen: the whole host is paused, it answers nothing and resets nothing`
      : `${who} thawed: the host runs again`;
  }
  if (action === 'down') {
    // Not a clean shutdown: systemd as PID 1 takes SIGTERM as "re-execute", so after 1 s the container is
    // killed, like a host that loses power. Its address then answers nothing.
    await docker(['stop', '-t', '1', m.name], { step: `taking ${name} down` });
    return `${who} down: the whole host is stopped (its container), nothing answers at its address`;
  }
  if (action === 'up' || action === 'power-on') {
    await docker(['start', m.name], { step: `bringing ${name} up` });
    // A started container has a fresh network namespace, without the qdiscs of a partition; one left
    // running (partitioned, then powered on) is healed here.
    await applyPartition(m, false);
    if (fault) await setMasterFault(dir, name, undefined);
    const paths = labPaths(labDir);
    const h = await waitForMaster(m, paths, await fs.readFile(paths.caFile, 'utf8'), UP_TIMEOUT_MS, 'answer');
    if (!h.ok) {
      throw new EnvironmentError(`${who} was started but is not healthy within ${UP_TIMEOUT_MS / 1000} s: ${h.detail}`, {
        hint: `look at \`docker logs ${m.name}\`, or \`docker exec ${m.name} systemctl status ${APISERVER_UNIT}\``,
      });
    }
    return `${who} ${action === 'up' ? 'up' : 'powered on'}: the host booted (${h.detail})`;
  }
  if (action === 'stop' || action === 'start') {
    // systemctl returns once the unit has stopped (the stand-in has gone through its shutdown sequence and exited) or has been started.
    await docker(['exec', m.name, 'systemctl', action, APISERVER_UNIT], { step: `systemctl ${action} ${APISERVER_UNIT} on ${name}` });
    if (action === 'stop') {
      return `${who} kube-apiserver stopped (SIGTERM: /readyz turned red, it served its shutdown delay, sent GOAWAY, ended its watches, drained its requests and exited): connections are refused, the host stays up`;
    }
    const caPem = await fs.readFile(labPaths(labDir).caFile, 'utf8');
    // Started already (systemctl changes nothing then) and made unready on purpose: it answers, which will do.
    const h = await probeMaster(m, caPem, START_TIMEOUT_MS, 'answer');
    if (!h.ok) {
      throw new EnvironmentError(`${who} kube-apiserver was started but does not answer /readyz within ${START_TIMEOUT_MS / 1000} s: ${h.detail}`, {
        hint: `look at \`docker exec ${m.name} journalctl -u ${APISERVER_UNIT}\``,
      });
    }
    return `${who} kube-apiserver started: ${h.detail}`;
  }
  if (action === 'lag' && lagMs === undefined) throw new UsageError('lag needs the watch cache\'s lag in milliseconds', { hint: `e.g. k8s-ha lab master ${name} lag 2000` });
  const controlPath = action === 'lag' ? `/control/lag?ms=${lagMs}` : `/control/${action}`;
  await new Promise<void>((resolve, reject) => {
    const req = http.request({ host: m.address, port: STANDIN_CONTROL_PORT, method: 'POST', path: controlPath, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${name} control answered HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${name} control port did not answer within 5 s (is the host frozen?)`)));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'ECONNREFUSED'
          ? new UsageError(`${who}: its kube-apiserver is not running, so it cannot be made ${action}`, {
              hint: `start it first: k8s-ha lab master ${name} start --dir ${dir}`,
            })
          : e,
      ),
    );
    req.end();
  });
  if (action === 'crash') return `${who} crashed: its kube-apiserver listens no more on :6443 (connections refused), its process and the host stay up`;
  if (action === 'recover') return `${who} recovered: its kube-apiserver listens on :6443 again`;
  if (action === 'anonymous-off') return `${who} refuses anonymous requests: /readyz, /livez and the API answer 401 without a client certificate of the lab CA`;
  if (action === 'anonymous-on') return `${who} serves anonymous requests again`;
  if (action === 'lag') {
    return lagMs
      ? `${who} watch cache ${lagMs} ms behind etcd: watches get events ${lagMs} ms late, reads at a newer resourceVersion wait up to 3 s, then 504`
      : `${who} watch cache in step with etcd again`;
  }
  if (action === 'readyz-flood') return `${who} /readyz now answers 200 and a body that never ends`;
  return `${who} /readyz now answers ${action === 'ready' ? '200' : '500'}`;
}
