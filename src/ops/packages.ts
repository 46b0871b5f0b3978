/**
 * Packages from the host's own package manager (apt-get, dnf or yum), for what k8s-ha does not
 * build: haproxy and keepalived on the VIP hosts. Each package is known by the command it
 * installs; a host that has them all is left alone. The install runs while staging, before any
 * file is validated (a config check needs the program) and before anything live moves: a host
 * that cannot install them (offline, no such package) fails there with nothing changed but the
 * packages. Installed packages stay when a change is rolled back.
 */
import { z } from 'zod';
import { quote } from '../util/quote.js';
import { noop, type Operation } from './types.js';

const pkgName = z.string().regex(/^[a-z0-9][a-z0-9+.-]*$/, 'must be a package name such as haproxy');

type PackagesArgs = { names: string[] };

/** Shell: true when every package's command is on root's PATH. */
export function installedGuard(names: string[]): string {
  return names.map((n) => `command -v ${quote(n)}`).join(' && ');
}

/** Shell: install with the host's package manager; on failure, one line naming the packages and the manager, then its last words. */
export function installCommand(names: string[], manager: 'apt-get' | 'dnf' | 'yum'): string {
  const list = names.map(quote).join(' ');
  const apt = `export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q --no-install-recommends ${list} || { apt-get update -q && apt-get install -y -q --no-install-recommends ${list}; }`;
  const install = manager === 'apt-get' ? apt : `${manager} install -y -q ${list}`;
  const what = `cannot install ${names.join(' ')} with ${manager}: the host is offline, its package mirror does not answer, its package database is locked, or no configured repository has them; install them by hand and deploy again`;
  return `log=$( ( ${install} ) 2>&1 ) || { echo ${quote(what)}; printf '%s\\n' "$log" | grep -v '^\\s*$' | tail -n 5; exit 1; }`;
}

export const packages: Operation<PackagesArgs> = {
  type: 'packages',
  args: z.strictObject({ names: z.array(pkgName).min(1, 'names at least one package') }),
  facts: (a) => ({ guards: [installedGuard(a.names)] }),
  plan(a, facts) {
    if (facts.guards[installedGuard(a.names)] === 0) return noop(`${a.names.join(', ')} installed`);
    if (!facts.packageManager) {
      // Nothing to install them with: the step fails while staging, saying so.
      const msg = `${a.names.join(' and ')} are missing and this host has no apt-get, dnf or yum: install them by hand and deploy again`;
      return { changes: [{ kind: 'run', when: 'staging', command: `echo ${quote(msg)}; exit 1`, label: `install ${a.names.join(' ')}` }], notify: [], summary: msg };
    }
    return {
      changes: [{ kind: 'run', when: 'staging', command: installCommand(a.names, facts.packageManager), label: `install ${a.names.join(' ')}` }],
      notify: [],
      summary: `install ${a.names.join(', ')} with ${facts.packageManager}`,
    };
  },
};
