/** Make an apiserver stand-in unready, or stop and start it: how tests and demos fail a master. */
import http from 'node:http';
import { UsageError } from '../errors.js';
import { docker } from './docker.js';
import { readState } from './state.js';
import { planLab, STANDIN_CONTROL_PORT, type LabContainer } from './topology.js';

export type MasterAction = 'ready' | 'unready' | 'crash' | 'recover' | 'stop' | 'start' | 'freeze' | 'thaw';

export async function findMaster(dir: string, name: string): Promise<LabContainer> {
  const state = await readState(dir);
  if (!state) throw new UsageError(`no lab in ${dir}`, { hint: `start one with \`k8s-ha lab up --dir ${dir}\`` });
  const plan = planLab({ ...state, dir: state.dir });
  const m = plan.containers.find((c) => c.role === 'master' && c.service === name);
  if (!m) {
    const names = plan.containers.filter((c) => c.role === 'master').map((c) => c.service);
    throw new UsageError(`the lab has no master named ${name}`, { hint: `use one of: ${names.join(', ')}` });
  }
  return m;
}

export async function controlMaster(dir: string, name: string, action: MasterAction): Promise<string> {
  const m = await findMaster(dir, name);
  if (action === 'freeze' || action === 'thaw') {
    // docker pause: every process of the stand-in stops dead; its TCP peers get no FIN and no RST.
    await docker([action === 'freeze' ? 'pause' : 'unpause', m.name], { step: `${action} ${name}` });
    return `${name} (${m.address}) ${action === 'freeze' ? 'frozen: it answers nothing and resets nothing' : 'thawed'}`;
  }
  if (action === 'stop' || action === 'start') {
    await docker([action, m.name], { step: `${action} ${name}` });
    return `${name} (${m.address}) ${action === 'stop' ? 'stopped' : 'started'}`;
  }
  await new Promise<void>((resolve, reject) => {
    const req = http.request({ host: m.address, port: STANDIN_CONTROL_PORT, method: 'POST', path: `/control/${action}`, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${name} control answered HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${name} control port did not answer within 5 s (is it stopped?)`)));
    req.on('error', reject);
    req.end();
  });
  if (action === 'crash') return `${name} (${m.address}) crashed: nothing listens on :6443 (connections refused), the host stays up`;
  if (action === 'recover') return `${name} (${m.address}) listens on :6443 again`;
  return `${name} (${m.address}) /readyz now answers ${action === 'ready' ? '200' : '500'}`;
}
