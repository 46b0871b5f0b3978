/**
 * The lab's SSH host CA: one ed25519 key pair per lab directory that signs the
 * bastion's host key as a host certificate, so `@cert-authority` trust (one
 * line for every host of the lab, no per-host key) can be tried with real
 * OpenSSH. The keys are made and signed by ssh-keygen inside the lab's node
 * image (which has OpenSSH), not on this machine: a controller with only Node
 * and Docker, as the quick start promises, has no ssh-keygen.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { docker } from './docker.js';
import { writeFileAtomic } from './state.js';
import { parseSubnet16, type LabContainer, type LabPlan } from './topology.js';

/** Under DIR/ssh: the CA's private key, and its public key beside it as `host-ca.pub`. */
export const HOST_CA_KEY = 'host-ca';
/** Under DIR/hosts/bastion: what the certificate there was signed for, to sign again only when that changes. */
const CERT_STAMP = 'host-certificate-for';

/** The host name pattern that covers every address of the lab's /16, as known_hosts globs it. */
export function labHostPattern(subnet: string): string {
  const s = parseSubnet16(subnet);
  if (typeof s === 'string') throw new Error(s);
  return `${s.a}.${s.b}.*`;
}

/** The one line of known_hosts-cert-authority: trust any lab host whose key the lab's CA signed. */
export function certAuthorityLine(subnet: string, caPublicKey: string): string {
  return `@cert-authority ${labHostPattern(subnet)} ${caPublicKey.trim()}\n`;
}

/** Names the bastion's certificate is valid for: its address (what clients dial) and its host name. */
export function bastionPrincipals(bastion: LabContainer): string[] {
  return [bastion.address, bastion.service];
}

/** sshd_config.d snippet for the bastion: present its certificate beside its plain host key. */
export function bastionSshdConfig(certPathInside: string): string {
  return `# k8s-ha lab: the bastion also presents its host key signed by the lab's SSH host CA.\nHostCertificate ${certPathInside}\n`;
}

export interface SignRequest {
  /** Comment of the CA key, should it be made now. */
  caComment: string;
  keyId: string;
  principals: string[];
  /** Owner to give the files made in the container (it runs as root), so the lab's user can read and remove them. */
  uid: number;
  gid: number;
}

/**
 * The script run in a throwaway container with DIR/ssh at /lab/ssh and the
 * bastion's host directory at /lab/host: make the CA once, sign the host key.
 */
export function signScript(r: SignRequest): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    'set -eu',
    'cd /lab/ssh',
    // A half-made CA (one of the pair missing) is useless: make both again.
    `if [ ! -s ${HOST_CA_KEY} ] || [ ! -s ${HOST_CA_KEY}.pub ]; then`,
    `  rm -f ${HOST_CA_KEY} ${HOST_CA_KEY}.pub`,
    `  ssh-keygen -q -t ed25519 -N '' -C ${q(r.caComment)} -f ${HOST_CA_KEY}`,
    'fi',
    'rm -f /lab/host/ssh_host_ed25519_key-cert.pub',
    `ssh-keygen -q -s ${HOST_CA_KEY} -I ${q(r.keyId)} -h -n ${q(r.principals.join(','))} /lab/host/ssh_host_ed25519_key.pub`,
    `chown ${r.uid}:${r.gid} ${HOST_CA_KEY} ${HOST_CA_KEY}.pub /lab/host/ssh_host_ed25519_key-cert.pub`,
    '',
  ].join('\n');
}

export interface HostCaFiles {
  /** DIR/ssh/host-ca.pub */
  caPublicKey: string;
  /** DIR/known_hosts-cert-authority */
  certAuthorityKnownHosts: string;
  /** DIR/hosts/bastion/ssh_host_ed25519_key-cert.pub */
  bastionCertificate: string;
  /** True when this call made the CA or signed the certificate. */
  changed: boolean;
}

/**
 * Make the CA if missing and sign the bastion's host key (whose key pair must
 * already be in DIR/hosts/bastion) unless its certificate is current.
 */
export async function ensureHostCa(plan: LabPlan, bastion: LabContainer, labDir: string): Promise<HostCaFiles> {
  const sshDir = path.join(labDir, 'ssh');
  const hostDir = path.join(labDir, 'hosts', bastion.service);
  const caPub = path.join(sshDir, `${HOST_CA_KEY}.pub`);
  const cert = path.join(hostDir, 'ssh_host_ed25519_key-cert.pub');
  const stampFile = path.join(hostDir, CERT_STAMP);
  const principals = bastionPrincipals(bastion);

  const caText = fs.existsSync(path.join(sshDir, HOST_CA_KEY)) && fs.existsSync(caPub) ? await fsp.readFile(caPub, 'utf8') : '';
  const stamp = (ca: string) => `${principals.join(',')} ${ca.trim()}\n`;
  const current =
    caText !== '' && fs.existsSync(cert) && fs.existsSync(stampFile) && (await fsp.readFile(stampFile, 'utf8')) === stamp(caText);
  if (!current) {
    const script = signScript({
      caComment: `k8s-ha lab host CA (${plan.id})`,
      keyId: bastion.service,
      principals,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
    });
    await fsp.mkdir(sshDir, { recursive: true });
    await docker(
      ['run', '--rm', '--network', 'none', '-v', `${sshDir}:/lab/ssh`, '-v', `${hostDir}:/lab/host`, bastion.image, 'sh', '-c', script],
      { step: 'making the lab SSH host CA and signing the bastion host key (ssh-keygen in the node image)' },
    );
    await writeFileAtomic(stampFile, stamp(await fsp.readFile(caPub, 'utf8')));
  }
  const certAuthorityKnownHosts = path.join(labDir, 'known_hosts-cert-authority');
  await writeFileAtomic(certAuthorityKnownHosts, certAuthorityLine(plan.network.subnet, await fsp.readFile(caPub, 'utf8')));
  return { caPublicKey: caPub, certAuthorityKnownHosts, bastionCertificate: cert, changed: !current };
}
