/**
 * The lab's files: its SSH key pair, one host key per SSH host (node, master,
 * bastion: so known_hosts is written before any of them boots and strict
 * checking works from the first login), a CA with one serving certificate per
 * master's stand-in, the tarball for the mirror, and the inventory. Keys and
 * the CA are made once per lab directory.
 * With a bastion: its host key too, an SSH host CA that signs it, and an
 * inventory that reaches the nodes through it.
 */
// Before ssh2 loads, so this process's SSH connections can take host certificates.
import '../connect/ssh2-certs.js';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';
import YAML from 'yaml';
import { NGINX_SOURCE } from './sources.js';
import { ensureHostCa, HOST_CA_KEY, bastionSshdConfig } from './host-ca.js';
import { renderKubeconfig } from './kubectl.js';
import { writeFileAtomic, writeFileIfChanged } from './state.js';
import {
  APISERVER_PORT,
  BASTION_HOST_CERT_PATH,
  BASTION_SSHD_CONF,
  KUBECONFIG_FILE,
  LAB_KUBE_PROXY_KUBECONFIG,
  LOCAL_LB,
  MIRROR_PORT,
  type LabContainer,
  type LabPlan,
} from './topology.js';

export interface LabPaths {
  dir: string;
  inventory: string;
  /** The same lab with every host (masters, nodes, the mirror) named by its IPv6 address. */
  inventory6: string;
  /** Written only when the lab has a bastion: every node through it. */
  bastionInventory: string;
  knownHosts: string;
  /** Only `@cert-authority <lab addresses> <host CA key>`: trusts the bastion's certificate, nothing else. */
  certAuthorityKnownHosts: string;
  /** The host CA's public key (its private key is beside it, without `.pub`). */
  hostCaPublicKey: string;
  /** OpenSSH client settings for the lab, for `ssh -F` (which `ssh -J` passes on to the jump). */
  sshConfig: string;
  identityFile: string;
  caFile: string;
  /** A client certificate (and its key) for health checks, for masters made to refuse anonymous requests. */
  readyzCert: string;
  readyzKey: string;
  /** Points at the node-local balancer; on every SSH host as ~/.kube/config. */
  kubeconfig: string;
  /** kubectl for this machine, copied out of the node image. */
  kubectl: string;
}

export function labPaths(dir: string): LabPaths {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    inventory: path.join(abs, 'inventory.yaml'),
    inventory6: path.join(abs, 'inventory-ipv6.yaml'),
    bastionInventory: path.join(abs, 'inventory-bastion.yaml'),
    knownHosts: path.join(abs, 'known_hosts'),
    certAuthorityKnownHosts: path.join(abs, 'known_hosts-cert-authority'),
    hostCaPublicKey: path.join(abs, 'ssh', `${HOST_CA_KEY}.pub`),
    sshConfig: path.join(abs, 'ssh_config'),
    identityFile: path.join(abs, 'ssh', 'id_ed25519'),
    caFile: path.join(abs, 'pki', 'ca.crt'),
    readyzCert: path.join(abs, 'pki', 'lab-readyz.crt'),
    readyzKey: path.join(abs, 'pki', 'lab-readyz.key'),
    kubeconfig: path.join(abs, KUBECONFIG_FILE),
    kubectl: path.join(abs, 'bin', 'kubectl'),
  };
}

/** The plan's bastion, if it has one. */
export function labBastion(plan: LabPlan): LabContainer | undefined {
  return plan.containers.find((c) => c.role === 'bastion');
}

/** The `ssh.proxyJump` of an inventory that goes through the lab's bastion. */
export function bastionJump(bastion: LabContainer): string {
  return `root@${bastion.address}`;
}

export interface LabFileOptions {
  /** The nodes answer only through the bastion: inventory.yaml goes through it too. */
  isolated?: boolean;
}

async function missing(file: string): Promise<boolean> {
  return !fs.existsSync(file);
}

/**
 * An ed25519 key pair in OpenSSH's formats. ssh2 1.17's generator strips every leading zero byte of
 * the public key (meaning to drop only the BIT STRING's unused-bits byte): one key in 256 comes out
 * 31 bytes long, and sshd refuses it ("error in libcrypto"), so the lab host never accepts a login.
 * Such a key is made again.
 */
function sshKeyPair(comment: string): { private: string; public: string } {
  for (;;) {
    const k = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    if (ed25519KeyLength(k.public) === 32) return { private: k.private, public: k.public.trim() + '\n' };
  }
}

/** The length of the key inside an `ssh-ed25519 BLOB` line: string "ssh-ed25519", then string key. */
export function ed25519KeyLength(publicLine: string): number {
  const blob = Buffer.from(publicLine.trim().split(/\s+/)[1] ?? '', 'base64');
  const nameLength = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
  return blob.length >= 8 + nameLength ? blob.readUInt32BE(4 + nameLength) : 0;
}

/** Make whatever lab files are missing; leaf certificates follow the plan's addresses. */
export async function ensureLabFiles(plan: LabPlan, dir: string, tarball: string, options: LabFileOptions = {}): Promise<LabPaths> {
  const p = labPaths(dir);
  const at = (...parts: string[]) => path.join(p.dir, ...parts);

  if (await missing(p.identityFile)) {
    const k = sshKeyPair(`k8s-ha-lab@${plan.id}`);
    await writeFileAtomic(p.identityFile, k.private, 0o600);
    await writeFileAtomic(`${p.identityFile}.pub`, k.public);
  }
  await writeFileAtomic(at('ssh', 'authorized_keys'), await fsp.readFile(`${p.identityFile}.pub`));

  // Every SSH host, masters and the bastion included: strict host key checking holds on every hop and every login.
  const sshHosts = plan.containers.filter((c) => c.role !== 'mirror');
  const masters = plan.containers.filter((c) => c.role === 'master');
  const known: string[] = [];
  for (const n of sshHosts) {
    const key = at('hosts', n.service, 'ssh_host_ed25519_key');
    if (await missing(key)) {
      const k = sshKeyPair(`root@${n.service}`);
      await writeFileAtomic(key, k.private, 0o600);
      await writeFileAtomic(`${key}.pub`, k.public);
    }
    const [type, blob] = (await fsp.readFile(`${key}.pub`, 'utf8')).trim().split(/\s+/);
    // A line for each address, as `ssh` with accept-new would record them: a login by either is checked strictly.
    known.push(`${n.address} ${type} ${blob}`, `${n.address6} ${type} ${blob}`);
  }
  await writeFileAtomic(p.knownHosts, known.join('\n') + '\n');

  // Loaded here, not at start-up: only the lab makes certificates.
  const { createCa, issueCertificate } = await import('./pki.js');
  if (await missing(p.caFile)) {
    const ca = await createCa(`k8s-ha lab CA (${plan.id})`);
    await writeFileAtomic(at('pki', 'ca.key'), ca.key, 0o600);
    await writeFileAtomic(p.caFile, ca.cert);
  }
  const ca = { cert: await fsp.readFile(p.caFile, 'utf8'), key: await fsp.readFile(at('pki', 'ca.key'), 'utf8') };
  for (const m of masters) await ensureServingCert(ca, m, at('pki', m.service), issueCertificate);
  // The kubernetes Service's endpoints, as each stand-in keeps them: itself and its peers (standin.ts), by IPv4 address, as
  // kube-apiserver's --advertise-address names one.
  for (const m of masters) {
    const others = masters.filter((x) => x !== m).map((x) => `${x.address}:${APISERVER_PORT}`);
    await writeFileAtomic(at('pki', m.service, 'standin.env'), `STANDIN_SELF=${m.address}:${APISERVER_PORT}\nSTANDIN_PEERS=${others.join(',')}\n`);
  }
  // kubectl's identity: a client certificate, as kubelet presents one (through an L4 balancer, unchanged).
  const adminCert = at('pki', 'lab-admin.crt');
  if (await missing(adminCert)) {
    const leaf = await issueCertificate(ca, { commonName: 'lab-admin', dnsNames: [], ipAddresses: [], usage: 'client' });
    await writeFileAtomic(at('pki', 'lab-admin.key'), leaf.key, 0o600);
    await writeFileAtomic(adminCert, leaf.cert);
  }
  // The health checks' identity for `anonymous-off` masters (tls.clientCertFile): a client certificate
  // of the lab CA with no other use. A real one would be a user allowed only get on /readyz and /livez.
  if (await missing(p.readyzCert)) {
    const leaf = await issueCertificate(ca, { commonName: 'k8s-ha-health', dnsNames: [], ipAddresses: [], usage: 'client' });
    await writeFileAtomic(p.readyzKey, leaf.key, 0o600);
    await writeFileAtomic(p.readyzCert, leaf.cert);
  }
  const kubeconfig = renderKubeconfig({
    paths: p,
    labId: plan.id,
    caPem: ca.cert,
    client: { cert: await fsp.readFile(adminCert, 'utf8'), key: await fsp.readFile(at('pki', 'lab-admin.key'), 'utf8') },
  });
  await writeFileIfChanged(p.kubeconfig, kubeconfig, 0o600);
  // kube-proxy's kubeconfig on every node, as the hard way writes it (certificates inline): the node
  // init installs it as /var/lib/kube-proxy/kubeconfig (0600 root), what kube-lb's discovery reads.
  const proxyCert = at('pki', 'kube-proxy.crt');
  if (await missing(proxyCert)) {
    const leaf = await issueCertificate(ca, { commonName: 'system:kube-proxy', dnsNames: [], ipAddresses: [], usage: 'client' });
    await writeFileAtomic(at('pki', 'kube-proxy.key'), leaf.key, 0o600);
    await writeFileAtomic(proxyCert, leaf.cert);
  }
  const proxyKubeconfig = renderKubeconfig({
    paths: p,
    labId: plan.id,
    caPem: ca.cert,
    client: { cert: await fsp.readFile(proxyCert, 'utf8'), key: await fsp.readFile(at('pki', 'kube-proxy.key'), 'utf8') },
    user: 'system:kube-proxy',
    header: `# kube-proxy's kubeconfig on the nodes of the k8s-ha lab ${plan.id} (/var/lib/kube-proxy/kubeconfig), written by \`k8s-ha lab up\`.`,
  });
  for (const n of plan.containers.filter((c) => c.role === 'node')) await writeFileIfChanged(at('hosts', n.service, LAB_KUBE_PROXY_KUBECONFIG), proxyKubeconfig, 0o600);

  const served = at('mirror', NGINX_SOURCE.file);
  if (await missing(served)) {
    await fsp.mkdir(path.dirname(served), { recursive: true });
    await fsp.copyFile(tarball, served);
  }
  const bastion = labBastion(plan);
  if (bastion) {
    const conf = at('hosts', bastion.service, BASTION_SSHD_CONF);
    const want = bastionSshdConfig(BASTION_HOST_CERT_PATH);
    await writeFileIfChanged(conf, want);
    await ensureHostCa(plan, bastion, p.dir);
    await writeFileAtomic(p.bastionInventory, renderLabInventory(plan, p, { proxyJump: bastionJump(bastion) }));
  } else {
    // Left by an earlier lab in this folder whose files were deleted in part: they describe no host now.
    await fsp.rm(p.bastionInventory, { force: true });
    await fsp.rm(p.certAuthorityKnownHosts, { force: true });
  }
  await writeFileAtomic(p.sshConfig, renderLabSshConfig(plan, p));
  const jump = bastion && options.isolated ? bastionJump(bastion) : undefined;
  await writeFileAtomic(p.inventory, renderLabInventory(plan, p, { proxyJump: jump }));
  await writeFileAtomic(p.inventory6, renderLabInventory(plan, p, { proxyJump: jump, ipv6: true }));
  return p;
}

/**
 * OpenSSH client settings for the lab. `ssh -J` passes `-F` on to the ssh it
 * runs for the jump, but not `-i` or `-o`: with this file both hops use the
 * lab's key and known_hosts under strict checking.
 */
export function renderLabSshConfig(plan: LabPlan, p: LabPaths): string {
  const bastion = labBastion(plan);
  return [
    `# OpenSSH client settings for the k8s-ha lab in ${p.dir} (${plan.id}), written by \`k8s-ha lab up\`.`,
    `# ssh -F ${p.sshConfig} root@<node or master address>` + (bastion ? `, or through the bastion: ssh -F ${p.sshConfig} -J ${bastionJump(bastion)} root@<node address>` : ''),
    'Host *',
    '  User root',
    `  IdentityFile ${p.identityFile}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${p.knownHosts}`,
    '  StrictHostKeyChecking yes',
    '',
  ].join('\n');
}

async function ensureServingCert(
  ca: { cert: string; key: string },
  m: LabContainer,
  dir: string,
  issueCertificate: typeof import('./pki.js').issueCertificate,
): Promise<void> {
  const stamp = path.join(dir, 'address');
  const addresses = `${m.address} ${m.address6}`;
  if (fs.existsSync(stamp) && (await fsp.readFile(stamp, 'utf8')).trim() === addresses) return;
  // Names a real kube-apiserver certificate carries, so clients verify it the same way here.
  const leaf = await issueCertificate(ca, {
    commonName: m.service,
    dnsNames: [m.service, 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost'],
    ipAddresses: [m.address, m.address6, '127.0.0.1', '::1'],
    usage: 'server',
  });
  await writeFileAtomic(path.join(dir, 'tls.key'), leaf.key, 0o600);
  await writeFileAtomic(path.join(dir, 'tls.crt'), leaf.cert);
  await writeFileAtomic(path.join(dir, 'ca.crt'), ca.cert);
  await writeFileAtomic(stamp, addresses + '\n');
}

export interface LabInventoryOptions {
  /** `[user@]host[:port]` of a bastion every node is reached through. */
  proxyJump?: string;
  /** Name masters, nodes and the mirror by their IPv6 addresses (the bastion, a jump host, keeps its IPv4 one). */
  ipv6?: boolean;
}

export function renderLabInventory(plan: LabPlan, p: LabPaths, options: LabInventoryOptions = {}): string {
  const mirror = plan.containers.find((c) => c.role === 'mirror')!;
  const addr = (c: LabContainer) => (options.ipv6 ? c.address6 : c.address);
  const mirrorHost = options.ipv6 ? `[${mirror.address6}]` : mirror.address;
  const doc = {
    ssh: {
      user: 'root',
      port: 22,
      identityFile: p.identityFile,
      knownHostsFile: p.knownHosts,
      ...(options.proxyJump ? { proxyJump: options.proxyJump } : {}),
    },
    masters: plan.containers
      .filter((c) => c.role === 'master')
      .map((c) => ({ name: c.service, address: addr(c), port: APISERVER_PORT })),
    nodes: plan.containers.filter((c) => c.role === 'node').map((c) => ({ name: c.service, address: addr(c) })),
    lb: { listen: LOCAL_LB, balance: 'least_conn' },
    nginx: {
      version: NGINX_SOURCE.version,
      sources: [`http://${mirrorHost}${MIRROR_PORT === 80 ? '' : `:${MIRROR_PORT}`}/${NGINX_SOURCE.file}`],
      sha256: NGINX_SOURCE.sha256,
    },
    tls: { caFile: p.caFile, serverName: 'kubernetes' },
    // The lab is for trying k8s-ha on a bare machine: let the build install gcc and make here if missing.
    build: { host: 'controller', installToolchain: true },
  };
  const yaml = YAML.stringify(doc, { lineWidth: 0, collectionStyle: 'any', flowCollectionPadding: true }).replace(
    /^( {2}- )name: (\S+)\n {4}address: (\S+)(?:\n {4}port: (\d+))?$/gm,
    (_all, lead: string, name: string, address: string, port?: string) =>
      `${lead}{ name: ${name}, address: ${address}${port ? `, port: ${port}` : ''} }`,
  );
  return (
    `# Inventory of the k8s-ha lab in ${p.dir} (${plan.id}), written by \`k8s-ha lab up\`.\n` +
    (options.ipv6 ? '# Every master, node and the mirror by its IPv6 address on the lab network (the lab is dual-stack).\n' : '') +
    (options.proxyJump ? `# Every node is reached through the bastion ${options.proxyJump} (its host key is in known_hosts too).\n` : '') +
    '# The same format as any inventory: see docs/inventory.md.\n' +
    yaml
  );
}
