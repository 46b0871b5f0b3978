/**
 * A TLS-verified HTTPS GET over any stream: a plain TCP connection from here,
 * or an SSH direct-tcpip channel opened by a remote host (so the request really
 * leaves that host). Used to prove an apiserver answers, through whatever path.
 */
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface HttpsProbeOptions {
  path: string;
  /** PEM of the CA that must have signed the server's certificate. */
  ca?: string | Buffer;
  /** Name (DNS or IP) the certificate must be valid for; also sent as SNI when it is a DNS name. */
  servername: string;
  insecureSkipVerify?: boolean;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** A context made once with ca/cert/key (tls.createSecureContext): much cheaper than per connection. */
  secureContext?: tls.SecureContext;
  timeoutMs?: number;
  /** A TLS session from an earlier probe of the same server, to resume instead of a full handshake. */
  session?: Buffer;
  /** Called with the session this connection may be resumed with next time. */
  onSession?: (session: Buffer) => void;
}

/** The probe ran out of time: says nothing about the server (unlike a refusal or an error status). */
export class ProbeTimeout extends Error {
  readonly timedOut = true;
}

export interface HttpsProbeResult {
  status: number;
  body: string;
  /** Subject CN of the certificate the server presented. */
  peer?: string;
  /** SHA-256 fingerprint of that certificate: tells apiservers apart even when they share a CN. */
  fingerprint?: string;
}

export function httpsGet(
  connect: { address: string; port: number } | (() => Promise<Duplex>),
  opts: HttpsProbeOptions,
): Promise<HttpsProbeResult> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err: Error | null, r?: HttpsProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(r!);
    };
    const timer = setTimeout(() => {
      req?.destroy();
      done(new ProbeTimeout(`no answer to GET ${opts.path} within ${timeoutMs} ms`));
    }, timeoutMs);
    let req: ReturnType<typeof https.request> | undefined;

    const start = (socket?: Duplex) => {
      const tlsOptions: tls.ConnectionOptions = {
        ...(opts.secureContext ? { secureContext: opts.secureContext } : { ca: opts.ca, cert: opts.cert, key: opts.key }),
        rejectUnauthorized: !opts.insecureSkipVerify,
        servername: net.isIP(opts.servername) ? undefined : opts.servername,
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(opts.servername, cert),
        session: opts.session,
      };
      const withSession = (t: tls.TLSSocket) => {
        if (opts.onSession) t.on('session', (s: Buffer) => opts.onSession!(s));
        return t;
      };
      req = https.request(
        {
          // With createConnection Node must get no agent at all (agent: false would dial host:443 itself).
          ...(socket
            ? { createConnection: () => withSession(tls.connect({ ...tlsOptions, socket })) }
            : { host: (connect as { address: string }).address, port: (connect as { port: number }).port, agent: false, ...tlsOptions }),
          method: 'GET',
          path: opts.path,
          headers: { host: net.isIPv6(opts.servername) ? `[${opts.servername}]` : opts.servername, 'user-agent': 'k8s-ha', connection: 'close' },
        },
        (res) => {
          const chunks: Buffer[] = [];
          // The X509Certificate form is lazy: far cheaper than getPeerCertificate()'s full object.
          const cert = (res.socket as tls.TLSSocket).getPeerX509Certificate?.();
          const peer = cert ? /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1] : undefined;
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            done(null, {
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks).toString(),
              peer,
              fingerprint: cert?.fingerprint256,
            }),
          );
          res.on('error', (e) => done(e));
        },
      );
      req.on('error', (e) => done(e));
      req.end();
    };

    if (typeof connect === 'function') connect().then(start, (e: Error) => done(e));
    else start();
  });
}
