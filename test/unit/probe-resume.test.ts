/**
 * status's probes of the masters against real TLS servers on loopback: each master's first probe makes
 * the run's TLS session and the other nodes' probes of it resume that session, rather than every node
 * making a full handshake with every master at once.
 */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate } from '../../src/lab/pki.js';
import { probeReach } from '../../src/engine/probe.js';
import { ProbePool } from '../../src/engine/probe-pool.js';
import type { ProbeSession } from '../../src/connect/https-probe.js';
import type { SshConnection } from '../../src/connect/ssh.js';
import type { Inventory } from '../../src/inventory/schema.js';

const servers: { server: https.Server; port: number; full: number; resumed: number }[] = [];
let caFile: string;

beforeAll(async () => {
  const ca = await createCa('probe resume CA');
  caFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-probe-')), 'ca.crt');
  fs.writeFileSync(caFile, ca.cert);
  const leaf = await issueCertificate(ca, { commonName: 'm', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  // Two masters, and a third server standing for every node's local port.
  for (let i = 0; i < 3; i++) {
    const s = { server: https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => res.end('ok')), port: 0, full: 0, resumed: 0 };
    s.server.on('secureConnection', (t: TLSSocket) => (t.isSessionReused() ? s.resumed++ : s.full++));
    await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', () => r()));
    s.port = (s.server.address() as AddressInfo).port;
    servers.push(s);
  }
});
afterAll(() => {
  servers.forEach((s) => s.server.close());
  fs.rmSync(path.dirname(caFile), { recursive: true, force: true });
});

describe("status's probes of the masters", () => {
  it("make one full TLS handshake per master for the whole run: every other node's probe of it resumes that session", async () => {
    const [m1, m2, local] = servers as [(typeof servers)[0], (typeof servers)[0], (typeof servers)[0]];
    const inv = {
      masters: [
        { name: 'm1', address: '127.0.0.1', port: m1.port },
        { name: 'm2', address: '127.0.0.1', port: m2.port },
      ],
      lb: { listen: `127.0.0.1:${local.port}` },
      tls: { caFile, serverName: 'kubernetes', insecureSkipVerify: false },
    } as unknown as Inventory;
    const pool = new ProbePool({ limit: 64, perTarget: 12, timeoutMs: 3000 });
    const probing = { pool, sessions: new Map<string, ProbeSession>(), firstContact: new Map<string, Promise<void>>() };
    // Ten nodes at once, as status asks them; a node's "channel" here is a plain TCP connection.
    const nodes = Array.from({ length: 10 }, (_, i) => ({ name: `n${i}`, connectFromHost: async (a: string, p: number) => net.connect(p, a) }) as unknown as SshConnection);
    const reach = await Promise.all(nodes.map((c) => probeReach(c, inv, probing)));
    for (const r of reach) expect(r.masters.map((m) => m.direct.status)).toEqual([200, 200]);
    expect([m1.full, m1.resumed]).toEqual([1, 9]);
    expect([m2.full, m2.resumed]).toEqual([1, 9]);
    // Through the local port every node reached some master: answered, whichever way it was made.
    expect(local.full + local.resumed).toBe(20);
  });
});
