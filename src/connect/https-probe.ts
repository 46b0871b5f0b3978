/**
 * A TLS-verified HTTPS GET over any stream: a plain TCP connection from here,
 * or an SSH direct-tcpip channel opened by a remote host (so the request really
 * leaves that host). Used to prove an apiserver answers, through whatever path.
 */
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { countTls } from './counts.js';


/** The most of a probe's answer kept: a status and a short body are all a probe needs. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * An answer's body, when it is at most MAX_BODY_BYTES: /readyz answers in a few hundred bytes. Past
 * that, reading stops there (stop() hangs up) and the answer is `oversized`: whatever its status, it
 * is no health answer. Calls back once.
 */
export function readCapped(res: IncomingMessage, stop: () => void, then: (r: { body: string } | { oversized: true } | { error: Error }) => void): void {
  const chunks: Buffer[] = [];
  let bytes = 0;
  let called = false;
  const finish = (r: Parameters<typeof then>[0]) => {
    if (called) return;
    called = true;
    then(r);
  };
  res.on('data', (c: Buffer) => {
    if (called) return;
    chunks.push(c);
    bytes += c.length;
    if (bytes > MAX_BODY_BYTES) {
      stop();
      finish({ oversized: true });
    }
  });
  res.on('end', () => finish({ body: Buffer.concat(chunks).toString() }));
  res.on('error', (error) => finish({ error }));
}

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
  session?: ProbeSession;
  /** Called with the session this connection may be resumed with next time. */
  onSession?: (session: ProbeSession) => void;
  /** More request headers (an Authorization bearer token, Accept). */
  headers?: Record<string, string>;
}

/** The probe ran out of time: says nothing about the server (unlike a refusal or an error status). */
export class ProbeTimeout extends Error {
  readonly timedOut = true;
}

/**
 * The answer went past MAX_BODY_BYTES: reading stopped there. A definite answer, and not a health
 * endpoint's (an apiserver's /readyz is a few hundred bytes), so whatever its status it proves nothing.
 */
export class ProbeOversized extends Error {}

export interface HttpsProbeResult {
  status: number;
  body: string;
  /** Subject CN of the certificate the server presented. */
  peer?: string;
  /** SHA-256 fingerprint of that certificate: tells apiservers apart even when they share a CN. */
  fingerprint?: string;
}

/**
 * A TLS session to resume, with the certificate it was made with: a resumed connection shows no
 * certificate, and only the server that issued a session (its ticket key) resumes it, so the
 * session's certificate is the one of the server that answered.
 */
export interface ProbeSession {
  ticket: Buffer;
  fingerprint?: string;
  peer?: string;
}

const commonName = (subject: string) => /(?:^|\n)CN=([^\n]*)/.exec(subject)?.[1];

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
        checkServerIdentity: (_host, cert) => {
          // The certificate Node has just read for this check: who answered, at no cost of its own.
          checked = cert;
          return tls.checkServerIdentity(opts.servername, cert);
        },
        session: opts.session?.ticket,
      };
      let checked: tls.PeerCertificate | undefined;
      /**
       * Which server this connection reached: its certificate, or the resumed session's. Read at the
       * handshake: once a TLS 1.3 session ticket has arrived, Node shows no peer certificate any more.
       */
      let id: { fingerprint?: string; peer?: string } = {};
      const identify = (t: tls.TLSSocket) => {
        if (t.isSessionReused()) id = { fingerprint: opts.session?.fingerprint, peer: opts.session?.peer };
        else if (checked) id = { fingerprint: checked.fingerprint256, peer: [checked.subject?.CN ?? []].flat()[0] };
        else {
          // The X509Certificate form is lazy: far cheaper than getPeerCertificate()'s full object.
          const cert = t.getPeerX509Certificate?.();
          id = { fingerprint: cert?.fingerprint256, peer: cert ? commonName(cert.subject) : undefined };
        }
      };
      const withSession = (t: tls.TLSSocket) => {
        t.once('secureConnect', () => {
          identify(t);
          if (socket) countTls(socket, t.isSessionReused());
        });
        if (opts.onSession) t.on('session', (ticket: Buffer) => opts.onSession!({ ticket, ...id }));
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
          headers: { ...opts.headers, host: net.isIPv6(opts.servername) ? `[${opts.servername}]` : opts.servername, 'user-agent': 'k8s-ha', connection: 'close' },
        },
        (res) => {
          const { fingerprint, peer } = id;
          readCapped(
            res,
            () => req?.destroy(),
            (r) => {
              if ('error' in r) return done(r.error);
              if ('body' in r) return done(null, { status: res.statusCode ?? 0, body: r.body, peer, fingerprint });
              const from = peer ? ` from ${peer}` : '';
              done(new ProbeOversized(`GET ${opts.path} answered HTTP ${res.statusCode ?? 0}${from} with more than ${MAX_BODY_BYTES / 1024} KiB: not a health answer, stopped reading there`));
            },
          );
        },
      );
      // Dialled by https itself: the identity is read at its handshake too.
      if (!socket) req.once('socket', (s) => (s as tls.TLSSocket).once('secureConnect', () => identify(s as tls.TLSSocket)));
      req.on('error', (e) => done(e));
      req.end();
    };

    if (typeof connect === 'function') connect().then(start, (e: Error) => done(e));
    else start();
  });
}
