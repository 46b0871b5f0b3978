/**
 * The probe tells apiservers apart by their certificate, over real TLS on loopback: also when the
 * connection resumes an earlier session (no certificate is shown then) and when a TLS 1.3 session
 * ticket arrives before the answer (after which Node shows no peer certificate any more).
 */
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpsGet, ProbeOversized, type ProbeSession } from '../../src/connect/https-probe.js';
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

describe('httpsGet: an answer past the cap', () => {
  it('a /readyz that never ends: refused as no health answer once past 64 KiB, the connection closed, not read to its end', async () => {
    const leaf = await issueCertificate(ca, { commonName: 'apiserver-endless', dnsNames: ['kubernetes'], ipAddresses: ['127.0.0.1'], usage: 'server' });
    let closed!: () => void;
    const hungUp = new Promise<void>((r) => (closed = r));
    const s = https.createServer({ cert: leaf.cert, key: leaf.key }, (_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(16 * 1024, 'ok\n');
      const more = () => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on('drain', more);
      res.on('close', closed);
      more();
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    const e = await httpsGet({ address: '127.0.0.1', port }, { path: '/readyz', ca: ca.cert, servername: 'kubernetes', timeoutMs: 5000 }).then(
      () => undefined,
      (x: Error) => x,
    );
    expect(e).toBeInstanceOf(ProbeOversized);
    expect(e!.message).toBe('GET /readyz answered HTTP 200 from apiserver-endless with more than 64 KiB: not a health answer, stopped reading there');
    // The probe hung up: the server's endless answer ends here.
    await hungUp;
  });

  it('a short answer is read whole', async () => {
    const port = await server('apiserver-short');
    const r = await httpsGet({ address: '127.0.0.1', port }, { path: '/readyz', ca: ca.cert, servername: 'kubernetes' });
    expect([r.status, r.body]).toEqual([200, 'ok']);
  });
});
