import type { HostFacts } from '../../src/facts/host.js';

/** A Debian 12 host's facts with nothing on it, plus what a test sets: for planners fed plain data. */
export function hostFacts(partial: Partial<HostFacts> = {}): HostFacts {
  return {
    os: { id: 'debian', versionId: '12', prettyName: 'Debian', arch: 'x86_64', glibc: '2.36' },
    packageManager: 'apt-get',
    tools: [],
    files: {},
    dirs: {},
    units: {},
    guards: {},
    texts: {},
    versions: {},
    ...partial,
  };
}
