/**
 * Make sure a Docker engine answers. On Debian or Ubuntu as root we install
 * docker.io and start dockerd ourselves, saying so; anywhere else we stop with
 * what to install.
 */
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { EnvironmentError } from '../errors.js';
import { onPath, run, runOk } from '../util/exec.js';
import { engineAnswers, LAB_ROLE_LABEL } from './docker.js';

export type Say = (line: string) => void;

export function isDebianLike(): boolean {
  return fs.existsSync('/etc/debian_version');
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Install Debian packages as root, once `apt-get update` has run in this process. */
let aptUpdated = false;
export async function aptInstall(packages: string[], say: Say): Promise<void> {
  if (!aptUpdated) {
    say('apt-get update');
    await runOk('apt-get', ['update'], { step: 'apt-get update' });
    aptUpdated = true;
  }
  say(`apt-get install -y ${packages.join(' ')}`);
  await runOk('apt-get', ['install', '-y', '--no-install-recommends', ...packages], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    step: `installing ${packages.join(', ')}`,
  });
}

export async function ensureEngine(say: Say): Promise<void> {
  if (await engineAnswers()) return;
  const canInstall = isDebianLike() && isRoot();
  if (!canInstall) {
    throw new EnvironmentError('no Docker engine answers `docker info`', {
      hint: 'install and start Docker Engine (on Debian/Ubuntu: apt-get install docker.io, then start dockerd), or set DOCKER_HOST',
    });
  }
  if (!(await onPath('dockerd'))) {
    say('no Docker engine here: installing docker.io');
    await aptInstall(['docker.io'], say);
  }
  if (fs.existsSync('/run/systemd/system')) {
    say('starting docker.service');
    await runOk('systemctl', ['start', 'docker'], { step: 'systemctl start docker' });
  } else {
    // No systemd here (a container or a sandbox): run the daemon detached, logging to a file.
    const log = '/var/log/k8s-ha-dockerd.log';
    say(`starting dockerd in the background (log: ${log})`);
    const out = fs.openSync(log, 'a');
    const child = spawn('dockerd', [], { detached: true, stdio: ['ignore', out, out] });
    child.unref();
  }
  for (let i = 0; i < 60; i++) {
    if (await engineAnswers()) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new EnvironmentError('dockerd was started but `docker info` still fails after 60 s', {
    hint: 'see /var/log/k8s-ha-dockerd.log or `journalctl -u docker`',
  });
}

const INOTIFY_INSTANCES = '/proc/sys/fs/inotify/max_user_instances';

/** inotify instances this many systemd containers need: several each, plus the host's own. */
export function inotifyInstancesNeeded(hosts: number): number {
  return Math.max(512, 128 + 12 * hosts);
}

/** Lab roles whose containers boot systemd (the mirror runs one process). */
const SYSTEMD_ROLES = new Set(['node', 'master', 'bastion']);

/**
 * Every systemd in a lab container (node, master or bastion) takes several
 * inotify instances from the host's per-user limit (128 by default): past
 * about 40 of them, boots fail with "Failed to create inotify object". Raise
 * it when we can; say how otherwise. `hosts`: the systemd containers to start.
 */
export async function ensureHostLimits(hosts: number, say: Say): Promise<void> {
  // Every running systemd container on this engine counts, this lab's and any other lab's.
  const running = await run('docker', ['ps', '--filter', `label=${LAB_ROLE_LABEL}`, '--format', `{{.Label "${LAB_ROLE_LABEL}"}}`]).catch(
    () => undefined,
  );
  hosts += running?.stdout.split('\n').filter((role) => SYSTEMD_ROLES.has(role.trim())).length ?? 0;
  let current: number;
  try {
    current = Number(fs.readFileSync(INOTIFY_INSTANCES, 'utf8').trim());
  } catch {
    return; // not Linux /proc: the engine runs elsewhere (Docker Desktop) and has its own limits
  }
  const needed = inotifyInstancesNeeded(hosts);
  if (current >= needed) return;
  if (!isRoot()) {
    throw new EnvironmentError(
      `fs.inotify.max_user_instances is ${current}; ${hosts} systemd containers on this engine need about ${needed}`,
      { hint: `run: sudo sysctl -w fs.inotify.max_user_instances=${needed}` },
    );
  }
  fs.writeFileSync(INOTIFY_INSTANCES, String(needed));
  say(`raised fs.inotify.max_user_instances from ${current} to ${needed} (${hosts} systemd containers on this engine, each uses several)`);
}
