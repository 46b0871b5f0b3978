// An apiserver stand-in for bench:proxy, in a process of its own so that the benchmark can
// freeze it (SIGSTOP: a hung host) as well as make it unready (SIGUSR1; SIGUSR2 makes it ready).
//   node scripts/bench-standin.js NAME PORT CERT_FILE KEY_FILE
// GET /readyz: 200 or 500; GET /watch: a line every 100 ms; anything else: NAME.
import fs from 'node:fs';
import https from 'node:https';

const [name, port, certFile, keyFile] = process.argv.slice(2);
let ready = true;
process.on('SIGUSR1', () => (ready = false));
process.on('SIGUSR2', () => (ready = true));

const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (req, res) => {
  if (req.url === '/readyz') return void res.writeHead(ready ? 200 : 500).end(ready ? 'ok' : 'not ready');
  if (req.url === '/watch') {
    res.writeHead(200, { 'x-standin': name });
    res.write(`${name}\n`);
    const t = setInterval(() => res.write(`${name}\n`), 100);
    res.on('close', () => clearInterval(t));
    return;
  }
  res.writeHead(200, { 'x-standin': name }).end(name);
});
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\n'));
