/**
 * The health checks' client certificate (tls.clientCertFile/clientKeyFile): what haproxy and kube-lb
 * are told, how the key travels (a secret file: never diffed, never read back, never in --json),
 * what is refused before any connection, and the lab stand-in that refuses anonymous requests.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkNode } from '../../src/engine/check.js';
import type { PlannedHost } from '../../src/engine/host.js';
import { planHost, textFiles } from '../../src/engine/plan.js';
import { defaultPlaybookPath, parsePlaybook, playbookSteps } from '../../src/engine/playbook.js';
import { emptyRequest, factScript, parseFacts } from '../../src/facts/host.js';
import { parseInventory, resolvePaths } from '../../src/inventory/load.js';
import type { Inventory } from '../../src/inventory/schema.js';
import { clientPem, refusedReadyz } from '../../src/lb/client-cert.js';
import { renderKubeHaproxyConf } from '../../src/lb/haproxy.js';
import { renderKubeLbConf } from '../../src/lb/kube-lb.js';
import { TEMPLATES } from '../../src/lb/templates.js';
import { parseHaproxyCsv } from '../../src/engine/vip-status.js';
import { renderVipHaproxy, VIP_TEMPLATES } from '../../src/lb/vip.js';
import { createCa, issueCertificate, type PemPair } from '../../src/lab/pki.js';
import { serveApiserver, type Standin } from '../../src/lab/standin.js';
import { proxyConfigSchema } from '../../src/proxy/config.js';
import { hostFacts } from '../helpers/facts.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-client-cert-'));
let ca: PemPair;
let health: PemPair;
/** The key's base64 body: what must never show. */
let keyBody: string;

beforeAll(async () => {
  ca = await createCa('client-cert test CA');
  health = await issueCertificate(ca, { commonName: 'k8s-ha-health', dnsNames: [], ipAddresses: [], usage: 'client' });
  fs.writeFileSync(path.join(dir, 'ca.crt'), ca.cert);
  fs.writeFileSync(path.join(dir, 'health.crt'), health.cert);
  fs.writeFileSync(path.join(dir, 'health.key'), health.key);
  keyBody = health.key.split('\n')[1]!;
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const load = (tls: string, extra = ''): Inventory =>
  resolvePaths(
    parseInventory(`
masters:
  - { name: m1, address: 10.0.1.11 }
  - { name: m2, address: 10.0.1.12 }
nodes: [{ name: n1, address: 10.0.2.21 }, { name: n2, address: 10.0.2.22 }]
lb: { impl: haproxy }
tls: ${tls}
${extra}
`).inventory!,
    dir,
  );
const withCert = (extra = '') => load('{ caFile: ca.crt, serverName: kubernetes, clientCertFile: health.crt, clientKeyFile: health.key }', extra);
const withoutCert = (extra = '') => load('{ caFile: ca.crt, serverName: kubernetes }', extra);
const VIP = 'vip: { address: 10.0.1.100, hosts: [m1, m2] }';

describe('haproxy presents tls.clientCertFile on its checks', () => {
  it('kube-haproxy: the server defaults carry `crt` with the shipped PEM, beside check-ssl', () => {
    const cfg = renderKubeHaproxyConf(withCert());
    expect(cfg).toMatch(/^ {4}default-server check check-ssl verify required ca-file \/etc\/haproxy\/kube-haproxy-ca\.crt crt \/etc\/haproxy\/kube-haproxy-client\.pem check-sni kubernetes /m);
    // Only the checks speak TLS: the clients' own TLS passes through (no `ssl` on the servers).
    expect(cfg).not.toMatch(/ ssl /);
    expect(renderKubeHaproxyConf(withoutCert())).not.toContain(' crt ');
  });

  it("the VIP hosts' haproxy: the same, with the VIP's own file", () => {
    const inv = withCert(VIP);
    const host = { name: 'm1', address: '10.0.1.11', role: 'master' as const };
    expect(renderVipHaproxy(inv, host)).toContain(' crt /etc/haproxy/k8s-ha-client.pem ');
    expect(renderVipHaproxy(withoutCert(VIP), host)).not.toContain(' crt ');
    expect(VIP_TEMPLATES['vip-client.pem']!(inv, host, hostFacts(), [])).toBe(health.cert.trim() + '\n' + health.key.trim() + '\n');
  });

  it('the shipped PEM is the certificate then its key; without a certificate, one comment line', () => {
    const pem = TEMPLATES['kube-haproxy-client.pem']!(withCert());
    expect(pem.indexOf('BEGIN CERTIFICATE')).toBeLessThan(pem.indexOf('BEGIN PRIVATE KEY'));
    expect(pem).toContain(keyBody);
    expect(TEMPLATES['kube-haproxy-client.pem']!(withoutCert())).toMatch(/^# no client certificate/);
  });
});

describe('kube-lb presents it too', () => {
  it("points its checks at the shipped PEM (certificate and key in one file), which kube-lb's schema accepts", () => {
    const cfg = proxyConfigSchema.parse(YAML.parse(renderKubeLbConf(withCert('kubeLb: {}'))));
    expect(cfg.active).toMatchObject({ clientCertFile: '/opt/k8s/kube-lb/conf/kube-lb-client.pem', clientKeyFile: '/opt/k8s/kube-lb/conf/kube-lb-client.pem' });
    expect(renderKubeLbConf(withCert())).not.toContain(keyBody);
  });

  it("kubeLb.check's own paths on the node still win, and then nothing is shipped for kube-lb", () => {
    const inv = withCert('kubeLb: { check: { clientCertFile: /etc/kubernetes/pki/lb.crt, clientKeyFile: /etc/kubernetes/pki/lb.key } }');
    const cfg = proxyConfigSchema.parse(YAML.parse(renderKubeLbConf(inv)));
    expect(cfg.active).toMatchObject({ clientCertFile: '/etc/kubernetes/pki/lb.crt', clientKeyFile: '/etc/kubernetes/pki/lb.key' });
    expect(TEMPLATES['kube-lb-client.pem']!(inv)).not.toContain(keyBody);
  });
});

/** The real playbook, planned for n1 with the facts given: what deploy --check --diff and --json would show. */
function planned(file: string, inv: Inventory, facts = hostFacts()): PlannedHost {
  const templates = Object.keys(TEMPLATES);
  const parsed = parsePlaybook(fs.readFileSync(defaultPlaybookPath(file), 'utf8'), inv, templates);
  expect(parsed.diagnostics).toEqual([]);
  const steps = playbookSteps(parsed.raw!, inv, inv.nodes[0]!);
  const plan = planHost(inv.nodes[0]!, steps, facts, { artifacts: { 'kube-lb': { content: Buffer.from('kube-lb'), sha256: 'c'.repeat(64), describe: 'kube-lb' } }, render: (t) => TEMPLATES[t]!(inv), currentText: (p) => facts.texts[p] });
  return { job: { node: inv.nodes[0]!, steps } as never, plan, unit: 'kube-haproxy', timings: {} };
}

describe('the key is a secret file', () => {
  it('is installed 0600 root:root on kube-haproxy nodes, 0640 root:kube-lb for kube-lb, and validated by the balancer', () => {
    const put = (p: PlannedHost, dest: string) => p.plan.steps.flatMap((s) => s.plan?.changes ?? []).find((c) => c.kind === 'put' && c.path === dest) as { mode: string; owner?: string; validate?: string; before?: string; after?: string };
    const h = put(planned('kube-haproxy.yaml', withCert()), '/etc/haproxy/kube-haproxy-client.pem');
    expect(h).toMatchObject({ mode: '600', owner: 'root:root' });
    expect(h.validate).toMatch(/ crt \/etc\/haproxy\/kube-haproxy-client\.pem\|.*haproxy -c -q/);
    const k = put(planned('kube-lb.yaml', withCert()), '/opt/k8s/kube-lb/conf/kube-lb-client.pem');
    expect(k).toMatchObject({ mode: '640', owner: 'root:kube-lb' });
    expect(k.validate).toMatch(/kube-lb --check-config/);
    for (const c of [h, k]) {
      expect(c.before).toBeUndefined();
      expect(c.after).toBeUndefined();
    }
  });

  it('stays secret when a custom playbook forgets to say so, and may not be readable by others', () => {
    const inv = withCert();
    const book = (mode: string) =>
      fs.readFileSync(defaultPlaybookPath('kube-haproxy.yaml'), 'utf8').replace(/\n(\s+)secret: true\n/, '\n').replace(/(template: kube-haproxy-client\.pem[\s\S]*?mode: )"?0600"?/, `$1"${mode}"`);
    const plan = (mode: string) => {
      const parsed = parsePlaybook(book(mode), inv, Object.keys(TEMPLATES));
      expect(parsed.diagnostics).toEqual([]);
      const steps = playbookSteps(parsed.raw!, inv, inv.nodes[0]!);
      expect(textFiles(steps)).not.toContain('/etc/haproxy/kube-haproxy-client.pem');
      return planHost(inv.nodes[0]!, steps, hostFacts(), { artifacts: {}, render: (t) => TEMPLATES[t]!(inv), currentText: () => undefined });
    };
    const key = plan('0600').steps.flatMap((s) => s.plan?.changes ?? []).find((c) => c.kind === 'put' && c.path === '/etc/haproxy/kube-haproxy-client.pem') as { after?: string };
    expect(key).toBeDefined();
    expect(key.after).toBeUndefined();
    expect(() => plan('0644')).toThrow(/holds a private key: mode 0644 lets others read it/);
  });

  it('deploy --check --diff shows the CA and config diffs, never the key: the key file is only "changed", and --json holds no key', () => {
    const inv = withCert();
    const old = { sha256: 'a'.repeat(64), mode: '600', owner: 'root:root' };
    // The node's current key file differs: what would a diff print?
    const facts = hostFacts({ files: { '/etc/haproxy/kube-haproxy-client.pem': old, '/etc/haproxy/kube-haproxy.cfg': { ...old, mode: '644' } }, texts: { '/etc/haproxy/kube-haproxy.cfg': 'old\n' } });
    const check = checkNode(planned('kube-haproxy.yaml', inv, facts), undefined, true);
    const key = check.changes.find((c) => c.step === 'client certificate')!;
    expect(key.summary).toBe('write (secret, not shown) /etc/haproxy/kube-haproxy-client.pem (content changed)');
    expect(key.diff).toBeUndefined();
    expect(check.changes.find((c) => c.step === 'config')!.diff).toContain('+    default-server');
    const json = JSON.stringify(check);
    expect(json).not.toContain(keyBody);
    expect(json).not.toContain('PRIVATE KEY');
  });

  it("is never read back from a host: status's and --diff's fact script asks for the config's text, not the key's", () => {
    const p = planned('kube-haproxy.yaml', withCert());
    const texts = textFiles(p.job.steps);
    expect(texts).toContain('/etc/haproxy/kube-haproxy.cfg');
    expect(texts).not.toContain('/etc/haproxy/kube-haproxy-client.pem');
    expect(factScript({ ...emptyRequest(), texts })).not.toContain('kube-haproxy-client.pem');
  });

  it("a file whose owner differs is put again (the facts read user:group; older output without it still parses)", () => {
    const req = { ...emptyRequest(), files: ['/k'] };
    const facts = parseFacts(req, ['@@sha256', `${'b'.repeat(64)}  /k`, '@@stat', 'regular file|600|nobody:nogroup|/k'].join('\n'));
    expect(facts.files['/k']).toEqual({ sha256: 'b'.repeat(64), mode: '600', owner: 'nobody:nogroup' });
    const inv = withCert();
    const sha256 = createHash('sha256').update(TEMPLATES['kube-haproxy-client.pem']!(inv)).digest('hex');
    const dest = '/etc/haproxy/kube-haproxy-client.pem';
    const stepOf = (owner: string) => planned('kube-haproxy.yaml', inv, hostFacts({ files: { [dest]: { sha256, mode: '600', owner } } })).plan.steps.find((x) => x.step.name === 'client certificate')!.plan!;
    expect(stepOf('root:root').changes).toEqual([]);
    expect(stepOf('nobody:nogroup').summary).toBe(`write (secret, not shown) ${dest} (owner nobody:nogroup -> root:root)`);
    expect(parseFacts(req, ['@@sha256', `${'b'.repeat(64)}  /k`, '@@stat', 'regular file|600|/k'].join('\n')).files['/k']).toEqual({ sha256: 'b'.repeat(64), mode: '600' });
  });
});

describe('refused before any connection', () => {
  it("an administrator's certificate (system:masters, kubeadm:cluster-admins) is not shipped to every node", async () => {
    for (const group of ['system:masters', 'kubeadm:cluster-admins']) {
      const admin = await issueCertificate(ca, { commonName: 'kubernetes-admin', organizations: [group], dnsNames: [], ipAddresses: [], usage: 'client' });
      fs.writeFileSync(path.join(dir, 'admin.crt'), admin.cert);
      fs.writeFileSync(path.join(dir, 'admin.key'), admin.key);
      expect(() => clientPem(load('{ caFile: ca.crt, clientCertFile: admin.crt, clientKeyFile: admin.key }'))).toThrow(
        new RegExp(`admin\\.crt is a certificate of the group ${group} \\(an administrator's\\): k8s-ha copies it to every node and VIP host`),
      );
    }
    // Another group is fine.
    const viewer = await issueCertificate(ca, { commonName: 'k8s-ha-health', organizations: ['k8s-ha:health'], dnsNames: [], ipAddresses: [], usage: 'client' });
    fs.writeFileSync(path.join(dir, 'viewer.crt'), viewer.cert);
    fs.writeFileSync(path.join(dir, 'viewer.key'), viewer.key);
    expect(clientPem(load('{ caFile: ca.crt, clientCertFile: viewer.crt, clientKeyFile: viewer.key }'))).toContain('BEGIN CERTIFICATE');
  });

  it('a key that is not the certificate\'s, a missing file, and half a pair, each with the field named and no content quoted', async () => {
    const other = await issueCertificate(ca, { commonName: 'other', dnsNames: [], ipAddresses: [], usage: 'client' });
    fs.writeFileSync(path.join(dir, 'other.key'), other.key);
    const mismatch = load('{ caFile: ca.crt, clientCertFile: health.crt, clientKeyFile: other.key }');
    expect(() => clientPem(mismatch)).toThrow(/tls\.clientKeyFile .*other\.key is not the key of the certificate in .*health\.crt/);
    const missing = load('{ caFile: ca.crt, clientCertFile: health.crt, clientKeyFile: gone.key }');
    expect(() => clientPem(missing)).toThrow(/cannot read tls\.clientKeyFile .*gone\.key: ENOENT/);
    expect(() => clientPem(load('{ caFile: ca.crt, clientCertFile: health.crt }'))).toThrow(/tls\.clientCertFile is set without tls\.clientKeyFile/);
    fs.writeFileSync(path.join(dir, 'garbage.key'), 'not a key but a secret\n');
    try {
      clientPem(load('{ caFile: ca.crt, clientCertFile: health.crt, clientKeyFile: garbage.key }'));
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).toMatch(/garbage\.key holds no unencrypted PEM private key/);
      expect((e as Error).message).not.toContain('secret');
    }
  });
});

describe('a 401 from /readyz, in words', () => {
  it('says what to set, or that the certificate set is not accepted', () => {
    expect(refusedReadyz(withoutCert(), 401)).toBe('anonymous /readyz refused (401): set tls.clientCertFile/clientKeyFile');
    expect(refusedReadyz(withCert(), 401)).toMatch(/refused the client certificate of tls\.clientCertFile \(401\)/);
    expect(refusedReadyz(withCert(), 500)).toBeUndefined();
  });
});

describe("the VIP hosts' haproxy stats", () => {
  it('name the status a failed check got: 401 when an apiserver refuses the checks', () => {
    const csv = '# pxname,svname,scur,status,check_status,check_code,check_desc\nkube_apiservers,m1,0,DOWN,L7STS,401,Layer7 wrong status\n';
    expect(parseHaproxyCsv(csv)).toEqual([{ name: 'm1', status: 'DOWN', sessions: 0, check: 'L7STS 401 (Layer7 wrong status)' }]);
  });
});

describe('the lab stand-in with anonymous requests refused', () => {
  let standin: Standin;
  let port: number;
  let control: number;
  beforeAll(async () => {
    const pki = path.join(dir, 'standin');
    fs.mkdirSync(pki);
    const leaf = await issueCertificate(ca, { commonName: 'standin', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
    fs.writeFileSync(path.join(pki, 'ca.crt'), ca.cert);
    fs.writeFileSync(path.join(pki, 'tls.crt'), leaf.cert);
    fs.writeFileSync(path.join(pki, 'tls.key'), leaf.key);
    standin = serveApiserver({ name: 'loopback-1', pkiDir: pki, port: 0, controlPort: 0, host: '127.0.0.1', shutdownDelayMs: 0, log: () => {} });
    await new Promise((r) => (standin.api.listening ? r(undefined) : standin.api.once('listening', r)));
    await new Promise((r) => (standin.control.listening ? r(undefined) : standin.control.once('listening', r)));
    port = (standin.api.address() as { port: number }).port;
    control = (standin.control.address() as { port: number }).port;
  });
  afterAll(() => standin.close());

  const get = (p: string, client?: PemPair) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.get({ host: '127.0.0.1', port, path: p, ca: ca.cert, servername: 'kubernetes', agent: false, ...(client ? { cert: client.cert, key: client.key } : {}) }, (res) => {
        let body = '';
        res.on('data', (b) => (body += b));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
    });
  const post = (action: string) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: control, method: 'POST', path: `/control/${action}` }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end();
    });

  it('answers 401 to /readyz, /livez and the API without a certificate of its CA, as kube-apiserver --anonymous-auth=false; serves them with one', async () => {
    expect((await get('/readyz')).status).toBe(200);
    await post('anonymous-off');
    try {
      for (const p of ['/readyz', '/livez', '/api/v1/pods']) {
        const r = await get(p);
        expect(r.status).toBe(401);
        expect(JSON.parse(r.body)).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
      }
      expect(await get('/readyz', health)).toEqual({ status: 200, body: 'ok' });
      // A certificate of another CA is no identity either.
      const strangerCa = await createCa('stranger');
      const stranger = await issueCertificate(strangerCa, { commonName: 'k8s-ha-health', dnsNames: [], ipAddresses: [], usage: 'client' });
      expect((await get('/readyz', stranger)).status).toBe(401);
      // A resumed TLS session (status's probes resume theirs) of a client that sent no certificate is still anonymous;
      // one of a client that sent the lab's is still that client.
      for (const [who, client, want] of [['anonymous', undefined, 401], ['k8s-ha-health', health, 200]] as const) {
        let session: Buffer | undefined;
        const first = await new Promise<number>((resolve, reject) => {
          const req = https.get({ host: '127.0.0.1', port, path: '/readyz', ca: ca.cert, servername: 'kubernetes', agent: false, ...(client ?? {}) }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          });
          req.on('socket', (sock) => sock.on('session', (t: Buffer) => (session = t)));
          req.on('error', reject);
        });
        expect(first, who).toBe(want);
        expect(session, who).toBeDefined();
        const resumed = await new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
          const options: https.RequestOptions & { session?: Buffer } = { host: '127.0.0.1', port, path: '/readyz', ca: ca.cert, servername: 'kubernetes', agent: false, session, ...(client ?? {}) };
          const req = https.get(options, (res) => {
            const reused = (res.socket as import('node:tls').TLSSocket).isSessionReused();
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode!, reused }));
          });
          req.on('error', reject);
        });
        expect(resumed, who).toEqual({ status: want, reused: true });
      }
    } finally {
      await post('anonymous-on');
    }
    expect((await get('/readyz')).status).toBe(200);
  });
});

