/**
 * The probe tells apiservers apart by their certificate, over real TLS on loopback: also when the
 * connection resumes an earlier session (no certificate is shown then) and when a TLS 1.3 session
 * ticket arrives before the answer (after which Node shows no peer certificate any more).
 */
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsGet, type ProbeSession } from '../../src/connect/https-probe.js';
import { createCa, issueCertificate, type PemPair } from '../../src/lab/pki.js';

let ca: PemPair;
const servers: https.Server[] = [];

async function server(name: string): Promise<number> {
  const leaf = await issueCertificate(ca, { commonName: name, dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
  const s = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => res.end('ok'));
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as AddressInfo).port;
}

beforeAll(async () => {
  ca = await createCa('probe test CA');
});
afterAll(() => servers.forEach((s) => s.close()));

describe('httpsGet: who answered', () => {
  it('names the server on a full handshake, and again on a resumed one', async () => {
    const [a, b] = [await server('apiserver-a'), await server('apiserver-b')];
    const via = (port: number) => () => new Promise<net.Socket>((r) => { const c = net.connect(port, '127.0.0.1', () => r(c)); });
    const sessions = new Map<number, ProbeSession>();
    const seen: string[] = [];
    for (let i = 0; i < 3; i++) {
      for (const port of [a, b]) {
        const r = await httpsGet(via(port), { path: '/readyz', ca: ca.cert, servername: 'kubernetes', session: sessions.get(port), onSession: (s) => sessions.set(port, s) });
        expect(r.status).toBe(200);
        seen.push(`${r.peer} ${r.fingerprint?.length}`);
      }
    }
    // Every answer carries its server's name and a SHA-256 fingerprint (95 characters), resumed or not.
    expect(seen).toEqual(Array.from({ length: 3 }, () => ['apiserver-a 95', 'apiserver-b 95']).flat());
    expect(sessions.get(a)?.peer).toBe('apiserver-a');
  });
});

describe('httpsGet: a bounded answer', () => {
  it('keeps 64 KiB of an endless body and ends the connection there, rather than read on', async () => {
    const leaf = await issueCertificate(ca, { commonName: 'flood', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
    let sent = 0;
    let closed!: () => void;
    const gone = new Promise<void>((r) => (closed = r));
    // An apiserver, or something in its place, that answers /readyz with a body that never ends.
    const s = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(16 * 1024, 'x');
      const pump = () => {
        while (!res.destroyed && res.write(chunk)) sent += chunk.length;
        if (!res.destroyed) res.once('drain', pump);
      };
      res.on('close', closed);
      pump();
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    const r = await httpsGet({ address: '127.0.0.1', port }, { path: '/readyz', ca: ca.cert, servername: 'kubernetes' });
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(64 * 1024);
    // The server sees the connection end: the probe stopped reading, it did not drain the flood.
    await gone;
    expect(sent).toBeLessThan(16 * 1024 * 1024);
  });
});
