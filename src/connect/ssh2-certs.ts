/**
 * Host certificates for ssh2's client. ssh2 1.17 does not negotiate `*-cert-v01@openssh.com`
 * host key algorithms; two places of its key exchange need to know that a certificate's
 * signature is made by the certified plain key. This module teaches it, before ssh2 loads:
 *
 * - the certificate algorithms (ed25519 and ecdsa) join ssh2's supported host key list;
 * - kex.js, as it is loaded, accepts the plain signature type for a certificate algorithm and
 *   verifies the exchange signature with the certified key.
 *
 * The certificate itself (CA, principals, validity) is then checked by our host verifier
 * (known-hosts.ts), like any host key. The patch is exact: if ssh2's source is not the one
 * expected (another version), nothing is changed and `hostCertificates` stays false, so no
 * certificate algorithm is ever offered and hosts are checked by their plain keys.
 */
import { createRequire } from 'node:module';
import { CERT_SUFFIX, parseHostCertificate } from './host-cert.js';
import { CERT_HOST_KEY_ALGORITHMS } from './known-hosts.js';

const require = createRequire(import.meta.url);


const HOOK = Symbol.for('k8s-ha.ssh2.parseHostKey');

const EDITS: [string, string][] = [
  [
    'if (sigType !== negotiated.serverHostKey) {',
    `if (sigType !== negotiated.serverHostKey && sigType + '${CERT_SUFFIX}' !== negotiated.serverHostKey) {`,
  ],
  ['parsedHostKey = parseDERKey(hostKey, name);', `parsedHostKey = globalThis[Symbol.for('k8s-ha.ssh2.parseHostKey')](parseDERKey, hostKey, name);`],
];

type ParseDERKey = (data: Buffer, type: string) => unknown;

/** The exchange signature of a certificate is made by the certified key: verify with that key. */
function parseHostKey(parseDERKey: ParseDERKey, hostKey: Buffer, name: string): unknown {
  if (!name.endsWith(CERT_SUFFIX)) return parseDERKey(hostKey, name);
  const nameField = Buffer.alloc(4);
  nameField.writeUInt32BE(Buffer.byteLength(name));
  let plain: Buffer;
  try {
    plain = parseHostCertificate(Buffer.concat([nameField, Buffer.from(name), hostKey])).publicKey;
  } catch (e) {
    return new Error(`malformed host certificate: ${(e as Error).message}`);
  }
  const typeLength = plain.readUInt32BE(0);
  return parseDERKey(plain.subarray(4 + typeLength), plain.subarray(4, 4 + typeLength).toString('latin1'));
}

function install(): boolean {
  let kexPath: string;
  let constantsPath: string;
  try {
    kexPath = require.resolve('ssh2/lib/protocol/kex.js');
    constantsPath = require.resolve('ssh2/lib/protocol/constants.js');
  } catch {
    return false;
  }
  // Too late once ssh2's key exchange is loaded: then leave it as it is.
  if (require.cache[kexPath]) return false;
  const fs = require('node:fs') as typeof import('node:fs');
  const source = fs.readFileSync(kexPath, 'utf8');
  if (!EDITS.every(([from]) => source.split(from).length === 2)) return false;

  (globalThis as Record<symbol, unknown>)[HOOK] = parseHostKey;
  const Module = require('node:module') as { _extensions: Record<string, (m: { _compile(code: string, file: string): void }, file: string) => void> };
  const original = Module._extensions['.js']!;
  Module._extensions['.js'] = function (m, file) {
    if (file !== kexPath) return original.call(this, m, file);
    Module._extensions['.js'] = original;
    let code = fs.readFileSync(file, 'utf8');
    for (const [from, to] of EDITS) code = code.replace(from, to);
    m._compile(code, file);
  };
  const constants = require(constantsPath) as { SUPPORTED_SERVER_HOST_KEY: string[] };
  for (const alg of CERT_HOST_KEY_ALGORITHMS) if (!constants.SUPPORTED_SERVER_HOST_KEY.includes(alg)) constants.SUPPORTED_SERVER_HOST_KEY.push(alg);
  return true;
}

/** True when ssh2 negotiates host certificates in this process. */
export const hostCertificates = install();
