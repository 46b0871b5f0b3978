/**
 * The lab's one door to the container engine: the `docker` CLI. The lab's
 * containers must outlive this process and have fixed addresses, which the
 * CLI does plainly; everything here reads in the lab's own words.
 */
import { run, runOk, type ExecOptions } from '../util/exec.js';

export const LAB_LABEL = 'io.k8s-ha.lab';
export const LAB_DIR_LABEL = 'io.k8s-ha.lab.dir';
export const LAB_ROLE_LABEL = 'io.k8s-ha.lab.role';

export async function docker(args: string[], options: ExecOptions & { step?: string; hint?: string } = {}): Promise<string> {
  return runOk('docker', args, { ...options, env: { ...process.env, DOCKER_BUILDKIT: '0' } });
}

export async function engineAnswers(): Promise<boolean> {
  try {
    const r = await run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 15_000 });
    return r.code === 0 && r.stdout.trim() !== '';
  } catch {
    return false;
  }
}

export async function imageExists(tag: string): Promise<boolean> {
  const r = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', tag]);
  return r.code === 0;
}

export interface ContainerState {
  name: string;
  id: string;
  running: boolean;
  status: string;
  role: string;
  address: string;
  image: string;
}

/** Containers carrying the lab's label, running or not. */
export async function labContainers(labId: string): Promise<ContainerState[]> {
  const ids = (await docker(['ps', '-aq', '--filter', `label=${LAB_LABEL}=${labId}`])).split('\n').filter(Boolean);
  if (!ids.length) return [];
  const out = await docker([
    'inspect',
    '--format',
    `{{.Name}}|{{.Id}}|{{.State.Running}}|{{.State.Status}}|{{index .Config.Labels "${LAB_ROLE_LABEL}"}}|{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}|{{.Config.Image}}`,
    ...ids,
  ]);
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name = '', id = '', running = '', status = '', role = '', address = '', image = ''] = line.split('|');
      return { name: name.replace(/^\//, ''), id, running: running === 'true', status, role, address, image };
    });
}

export async function networkExists(name: string): Promise<boolean> {
  const r = await run('docker', ['network', 'inspect', '--format', '{{.Name}}', name]);
  return r.code === 0;
}

/** Whether a network has IPv6 on (`docker network create --ipv6`); false when it does not exist. */
export async function networkHasIpv6(name: string): Promise<boolean> {
  const r = await run('docker', ['network', 'inspect', '--format', '{{.EnableIPv6}}', name]);
  return r.code === 0 && r.stdout.trim() === 'true';
}

/** Subnets of every network the engine has, to pick a free one for a new lab. */
export async function usedSubnets(): Promise<string[]> {
  const ids = (await docker(['network', 'ls', '-q'])).split('\n').filter(Boolean);
  if (!ids.length) return [];
  const out = await docker(['network', 'inspect', '--format', '{{range .IPAM.Config}}{{.Subnet}} {{end}}', ...ids]);
  return out.split(/\s+/).filter(Boolean);
}

/** The label value a network carries, or undefined when it has none or does not exist. */
export async function networkLabel(name: string, label: string): Promise<string | undefined> {
  const r = await run('docker', ['network', 'inspect', '--format', `{{index .Labels "${label}"}}`, name]);
  if (r.code !== 0) return undefined;
  const v = r.stdout.trim();
  return v && v !== '<no value>' ? v : undefined;
}
