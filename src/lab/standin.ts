/**
 * The lab's apiserver stand-in and nginx source mirror, run inside the lab's
 * apiserver image as `node standin.js apiserver` or `node standin.js mirror DIR`.
 * It imports only Node's own modules: the image holds this one file.
 *
 * apiserver (HTTPS :6443, certificate from the lab CA):
 *   GET /healthz, /livez      "ok"
 *   GET /readyz               "ok", or 500 while made unready (or shutting down)
 *   GET /version              JSON naming this stand-in, so a client can tell who answered
 *   GET /watch, or any path with ?watch=true
 *                             a long-lived chunked stream of JSON events, one a second
 * control (plain HTTP :8080, reachable on the lab network only):
 *   POST /control/ready | /control/unready   flip /readyz
 *   POST /control/crash | /control/recover   stop listening on :6443 (connections refused, as when
 *                                            kube-apiserver is gone and its host is up), and listen again
 *   GET  /control/state                      readiness and open connection counts
 * On SIGTERM it behaves like kube-apiserver: /readyz turns red at once, it keeps
 * serving for STANDIN_SHUTDOWN_DELAY_MS (default 0), then closes everything.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Socket } from 'node:net';

const name = process.env.STANDIN_NAME ?? 'standin';
const pkiDir = process.env.STANDIN_PKI_DIR ?? '/etc/k8s-ha-lab/pki';
const shutdownDelayMs = Number(process.env.STANDIN_SHUTDOWN_DELAY_MS ?? '0');

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} ${name} ${message}\n`);
}

function serveApiserver(): void {
  let ready = true;
  let shuttingDown = false;
  let requests = 0;
  const sockets = new Set<Socket>();
  const watches = new Set<http.ServerResponse>();

  const api = https.createServer(
    {
      cert: fs.readFileSync(path.join(pkiDir, 'tls.crt')),
      key: fs.readFileSync(path.join(pkiDir, 'tls.key')),
      ca: fs.readFileSync(path.join(pkiDir, 'ca.crt')),
      // Accept a client certificate when one is offered, as kube-apiserver does; never demand one.
      requestCert: true,
      rejectUnauthorized: false,
    },
    (req, res) => {
      requests++;
      const url = new URL(req.url ?? '/', 'https://standin');
      const text = (status: number, body: string) => {
        res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-standin': name });
        res.end(body);
      };
      if (url.pathname === '/healthz' || url.pathname === '/livez') return text(200, 'ok');
      if (url.pathname === '/readyz') {
        if (shuttingDown) return text(500, '[-]shutdown failed: reason withheld\nreadyz check failed');
        return ready ? text(200, 'ok') : text(500, '[-]etcd failed: reason withheld\nreadyz check failed');
      }
      if (url.pathname === '/version') {
        res.writeHead(200, { 'content-type': 'application/json', 'x-standin': name });
        res.end(
          JSON.stringify({
            major: '1',
            minor: '31',
            gitVersion: 'v1.31.0-k8s-ha-lab',
            platform: 'linux/amd64',
            standin: name,
          }),
        );
        return;
      }
      if (url.pathname === '/watch' || url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1') {
        res.writeHead(200, { 'content-type': 'application/json', 'x-standin': name });
        watches.add(res);
        let seq = 0;
        const tick = () => {
          seq++;
          res.write(JSON.stringify({ type: 'BOOKMARK', object: { standin: name, seq } }) + '\n');
        };
        tick();
        const timer = setInterval(tick, 1000);
        res.on('close', () => {
          clearInterval(timer);
          watches.delete(res);
        });
        return;
      }
      text(404, `404 page not found (${name})`);
    },
  );
  api.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  api.on('tlsClientError', () => {
    /* port probes and aborted handshakes are normal here */
  });
  api.listen(6443, '0.0.0.0', () => log('apiserver stand-in listening on :6443'));

  const control = http.createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'POST' && req.url === '/control/ready') {
      ready = true;
      log('made ready');
    } else if (req.method === 'POST' && req.url === '/control/unready') {
      ready = false;
      log('made unready');
    } else if (req.method === 'POST' && req.url === '/control/crash') {
      if (api.listening) api.close();
      for (const s of sockets) s.destroy();
      log('crashed: not listening on :6443');
    } else if (req.method === 'POST' && req.url === '/control/recover') {
      if (!api.listening) api.listen(6443, '0.0.0.0', () => log('recovered: listening on :6443'));
    } else if (!(req.method === 'GET' && req.url === '/control/state')) {
      return reply(404, { error: 'POST /control/ready, /control/unready, /control/crash, /control/recover or GET /control/state' });
    }
    reply(200, { name, ready: ready && !shuttingDown, connections: sockets.size, watches: watches.size, requests });
  });
  control.listen(8080, '0.0.0.0');

  process.on('SIGTERM', () => {
    if (shuttingDown) return;
    shuttingDown = true;
    log(`SIGTERM: /readyz is red, serving ${shutdownDelayMs} ms more`);
    setTimeout(() => {
      api.close();
      control.close();
      for (const s of sockets) s.destroy();
      log('stopped');
      process.exit(0);
    }, shutdownDelayMs);
  });
}

function serveMirror(root: string): void {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://mirror');
    const rel = path.posix.normalize(decodeURIComponent(url.pathname)).replace(/^\/+/, '');
    const file = path.join(root, rel);
    if (rel.startsWith('..') || !file.startsWith(root)) {
      res.writeHead(400).end('bad path\n');
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: /${rel}\n`);
        log(`${req.method} /${rel} 404`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
      log(`${req.method} /${rel} 200 ${st.size}`);
      if (req.method === 'HEAD') return void res.end();
      fs.createReadStream(file).pipe(res);
    });
  });
  server.listen(80, '0.0.0.0', () => log(`mirror serving ${root} on :80`));
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

const mode = process.argv[2];
if (mode === 'apiserver') serveApiserver();
else if (mode === 'mirror') serveMirror(path.resolve(process.argv[3] ?? '/srv/mirror'));
else {
  process.stderr.write('usage: standin.js apiserver | standin.js mirror DIR\n');
  process.exit(2);
}
