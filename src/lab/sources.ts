/**
 * The genuine nginx source tarball for the lab's mirror. Offline from nginx.org,
 * it comes from Debian's source package (whose .orig.tar.gz is the upstream
 * tarball, byte for byte), fetched in a throwaway container with the lab's base
 * image and the apt sources it already has. Kept in the cache; always checked
 * by sha256.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { sha256File } from '../build/download.js';
import { EnvironmentError } from '../errors.js';
import { privateCacheDir } from '../util/paths.js';
import { docker } from './docker.js';
import type { Say } from './engine.js';

export const NGINX_SOURCE = {
  version: '1.22.1',
  file: 'nginx-1.22.1.tar.gz',
  sha256: '9ebb333a9e82b952acd3e2b4aeb1d4ff6406f72491bab6cd9fe69f0dea737f31',
  debianOrig: 'nginx_1.22.1.orig.tar.gz',
} as const;

const FETCH_SCRIPT = `set -eu
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && sed -n 's/^deb \\(.*\\)$/deb-src \\1/p' "$f" >> /etc/apt/sources.list.d/k8s-ha-src.list
done
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" > "/etc/apt/sources.list.d/k8s-ha-src-$(basename "$f")"
done
apt-get update -qq
mkdir -p /tmp/src && cd /tmp/src
# Any 1.22.1 revision carries the same upstream tarball; the newest may lack its .dsc, so try each.
for v in $(apt-cache showsrc nginx | sed -n 's/^Version: //p' | sort -u); do
  case "$v" in ${NGINX_SOURCE.version}-*) ;; *) continue ;; esac
  apt-get source --download-only -qq "nginx=$v" >/dev/null 2>&1 || true
  [ -f ${NGINX_SOURCE.debianOrig} ] && break
done
cp ${NGINX_SOURCE.debianOrig} /out/${NGINX_SOURCE.file}.part
chmod 0644 /out/${NGINX_SOURCE.file}.part
`;

/** Path of the verified tarball in the cache, fetching it once if needed. */
export async function ensureNginxTarball(baseImage: string, say: Say): Promise<string> {
  const dir = await privateCacheDir('sources');
  const file = path.join(dir, NGINX_SOURCE.file);
  if (fs.existsSync(file) && (await sha256File(file)) === NGINX_SOURCE.sha256) return file;
  say(`fetching ${NGINX_SOURCE.file} from Debian's source package`);
  const part = `${file}.part`;
  await fsp.rm(part, { force: true });
  await docker(['run', '--rm', '-v', `${dir}:/out`, baseImage, 'sh', '-c', FETCH_SCRIPT], {
    step: 'fetching the nginx source tarball',
  });
  const got = await sha256File(part);
  if (got !== NGINX_SOURCE.sha256) {
    await fsp.rm(part, { force: true });
    throw new EnvironmentError(`the nginx tarball from Debian has sha256 ${got}, expected ${NGINX_SOURCE.sha256}`, {
      hint: 'the Debian mirror served something else; check the apt sources of this machine',
    });
  }
  await fsp.rename(part, file);
  return file;
}
