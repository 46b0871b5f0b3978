/**
 * One SSH connection per host, reused for every step (node-ssh over ssh2).
 * Host keys are checked against a known_hosts file the way OpenSSH's
 * StrictHostKeyChecking does: `yes` refuses unknown and changed keys,
 * `accept-new` records keys never seen before (and only those), `no` is an
 * explicit opt-out.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, type Duplex } from 'node:stream';
import { NodeSSH } from 'node-ssh';
import { CommandError, ConnectError } from '../errors.js';
import type { Connection } from './connection.js';
import { quote } from '../util/quote.js';
import {
  checkHostKey,
  fingerprint,
  keyTypeOf,
  knownHostsLine,
  knownKeyTypes,
  parseKnownHosts,
  type HostKeyCheck,
} from './known-hosts.js';

export type StrictHostKeyChecking = 'yes' | 'accept-new' | 'no';

export interface SshTarget {
  /** The host's name in the inventory, used in every message. */
  name: string;
  address: string;
  port: number;
  user: string;
  /** Private key file; without one, ssh-agent (SSH_AUTH_SOCK) is tried. */
  identityFile?: string;
  knownHostsFile: string;
  strictHostKeyChecking: StrictHostKeyChecking;
  connectTimeoutMs?: number;
  /** With accept-new: trust a key never seen before for this session only, without recording it (deploy --check writes nothing). */
  readOnly?: boolean;
}

export interface ExecInput {
  /** Standard input for the command: text, bytes, or a stream (a tarball, a binary). */
  input?: string | Buffer | Readable;
}

export interface RemoteResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
}

export function expandHome(p: string): string {
  return p === '~' ? os.homedir() : p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p;
}

export class SshConnection implements Connection {
  /** Connections open now and the most open at once in this process: what --concurrency bounds. */
  static openNow = 0;
  static peak = 0;
  private closed = false;

  /** Set when the connection died (keepalive timeout, reset): every later command fails at once. */
  private lost?: Error;

  private constructor(
    readonly target: SshTarget,
    private readonly ssh: NodeSSH,
  ) {
    // node-ssh drops its 'error' listener once connected; without ours, a node that dies while we
    // wait (keepalive timeout, ECONNRESET) would be an unhandled 'error' event and crash the run.
    const client = ssh.connection;
    client?.on('error', (e: Error) => (this.lost ??= e));
    client?.on('close', () => (this.lost ??= new Error('connection closed')));
  }

  private lostError(): ConnectError {
    return new ConnectError(this.target.name, 'unreachable', `connection to ${this.target.address}:${this.target.port} lost: ${this.lost?.message ?? 'no answer'}`);
  }

  get name(): string {
    return this.target.name;
  }

  get where(): string {
    return `${this.target.name} (${this.target.user}@${this.target.address})`;
  }

  static async open(target: SshTarget): Promise<SshConnection> {
    const knownHostsPath = expandHome(target.knownHostsFile);
    const knownText = await fs.readFile(knownHostsPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw e;
    });
    const entries = parseKnownHosts(knownText);
    let verdict: HostKeyCheck | undefined;
    let presented: Buffer | undefined;

    let privateKey: string | undefined;
    if (target.identityFile) {
      const keyPath = expandHome(target.identityFile);
      privateKey = await fs.readFile(keyPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new ConnectError(target.name, 'auth', `cannot read identity file ${keyPath}: ${e.code ?? e.message}`, {
          hint: 'set ssh.identityFile in the inventory to a private key that exists',
        });
      });
    }

    const preferred = knownKeyTypes(entries, target.address, target.port);
    const ssh = new NodeSSH();
    try {
      await ssh.connect({
        host: target.address,
        port: target.port,
        username: target.user,
        privateKey,
        // Like OpenSSH: keys from ssh-agent are offered as well as the identity file.
        agent: process.env.SSH_AUTH_SOCK,
        readyTimeout: target.connectTimeoutMs ?? 10_000,
        // A node that dies mid-run (or mid-roll) is noticed within about 10 s, not minutes.
        keepaliveInterval: 3_000,
        keepaliveCountMax: 3,
        algorithms: preferred.length
          ? { serverHostKey: { prepend: preferred as never[] } as never }
          : undefined,
        hostVerifier: (key: Buffer) => {
          presented = key;
          verdict = checkHostKey(entries, target.address, target.port, key);
          if (target.strictHostKeyChecking === 'no') return true;
          if (verdict.status === 'match') return true;
          return verdict.status === 'unknown' && target.strictHostKeyChecking === 'accept-new';
        },
      });
    } catch (err) {
      ssh.dispose();
      throw classifyConnectError(target, knownHostsPath, err, verdict, presented);
    }
    if (verdict?.status === 'unknown' && target.strictHostKeyChecking === 'accept-new' && presented && !target.readOnly) {
      await fs.mkdir(path.dirname(knownHostsPath), { recursive: true });
      await fs.appendFile(knownHostsPath, knownHostsLine(target.address, target.port, presented) + '\n', { mode: 0o644 });
    }
    SshConnection.openNow++;
    SshConnection.peak = Math.max(SshConnection.peak, SshConnection.openNow);
    return new SshConnection(target, ssh);
  }

  /** True when commands must go through sudo to act as root. */
  get needsSudo(): boolean {
    return this.target.user !== 'root';
  }

  /** Run a shell command line as the login user; never throws on a non-zero exit. */
  async exec(command: string, options: ExecInput = {}): Promise<RemoteResult> {
    if (this.lost) throw this.lostError();
    const input = options.input;
    const stdin = input === undefined ? undefined : typeof input === 'string' ? input : Buffer.isBuffer(input) ? Readable.from([input]) : input;
    let r;
    try {
      r = await this.ssh.execCommand(command, { stdin, noTrim: true });
    } catch (e) {
      this.lost ??= e as Error;
      throw this.lostError();
    }
    // No exit code and no signal: the connection went away under the command. What it did is unknown.
    if (r.code === null && r.signal === null) {
      this.lost ??= new Error('the command got no exit status');
      throw this.lostError();
    }
    return { stdout: r.stdout, stderr: r.stderr, code: r.code, signal: r.signal };
  }

  /** Run a shell script as root: directly when logged in as root, else through passwordless sudo. */
  async execAsRoot(script: string, options: ExecInput = {}): Promise<RemoteResult> {
    if (!this.needsSudo) return this.exec(script, options);
    const r = await this.exec(`sudo -n -- sh -c ${quote(script)}`, options);
    if (r.code === 1 && /^sudo: (a password is required|.*not in the sudoers|.*may not run sudo)/m.test(r.stderr)) {
      throw new ConnectError(this.target.name, 'auth', `${this.target.user} cannot become root with sudo: ${r.stderr.trim().split('\n')[0]}`, {
        hint: `give ${this.target.user} passwordless sudo on ${this.target.name} (e.g. '${this.target.user} ALL=(ALL) NOPASSWD:ALL' in /etc/sudoers.d/), or log in as root`,
      });
    }
    return r;
  }

  /** Run a command line and return stdout; a non-zero exit throws a CommandError naming host and step. */
  async execOk(command: string, options: ExecInput & { step?: string; asRoot?: boolean } = {}): Promise<string> {
    const r = options.asRoot ? await this.execAsRoot(command, options) : await this.exec(command, options);
    if (r.code !== 0) throw new CommandError(this.where, command, r.code, r.signal, r.stderr || r.stdout, { step: options.step });
    return r.stdout;
  }

  /** Copy a file from the host to this machine (SFTP). */
  async download(remote: string, local: string): Promise<void> {
    await this.ssh.getFile(local, remote);
  }

  /**
   * Start a script (as root) that keeps running until released: resolves once its output so far
   * satisfies `ready`, or it exits. Closing the channel, or losing the connection, ends it: what it
   * holds (a lock) cannot outlive this controller.
   */
  hold(
    script: string,
    ready: (stdout: string) => boolean,
    /** Called with the release function as soon as the channel is open (to give up a wait early). */
    onOpen?: (release: () => void) => void,
  ): Promise<{ stdout: string; exited: boolean; code: number | null; release: () => void }> {
    if (this.lost) return Promise.reject(this.lostError());
    const client = this.ssh.connection;
    if (!client) return Promise.reject(this.lostError());
    const command = this.needsSudo ? `sudo -n -- sh -c ${quote(script)}` : script;
    return new Promise((resolve, reject) => {
      client.exec(command, (err, channel) => {
        if (err) {
          this.lost ??= err;
          reject(this.lostError());
          return;
        }
        let stdout = '';
        let stderr = '';
        let settled = false;
        const release = () => {
          channel.end();
          channel.close();
        };
        onOpen?.(release);
        const settle = (exited: boolean, code: number | null) => {
          if (settled) return;
          settled = true;
          resolve({ stdout: exited && !stdout.trim() ? stderr : stdout, exited, code, release });
        };
        channel.on('data', (b: Buffer) => {
          stdout += b.toString();
          if (ready(stdout)) settle(false, null);
        });
        channel.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
        channel.on('exit', (code: number | null) => settle(true, code));
        channel.on('close', () => settle(true, null));
      });
    });
  }

  /** A TCP stream opened by the host itself to address:port (an SSH direct-tcpip channel). */
  async connectFromHost(address: string, port: number): Promise<Duplex> {
    return this.ssh.forwardOut('127.0.0.1', 0, address, port);
  }

  close(): void {
    if (!this.closed) SshConnection.openNow--;
    this.closed = true;
    this.ssh.dispose();
  }
}

function classifyConnectError(
  target: SshTarget,
  knownHostsPath: string,
  err: unknown,
  verdict: HostKeyCheck | undefined,
  presented: Buffer | undefined,
): ConnectError {
  const e = err as Error & { code?: string; level?: string };
  const at = `${target.address}:${target.port}`;
  if (verdict && presented && verdict.status !== 'match' && target.strictHostKeyChecking !== 'no') {
    const fp = fingerprint(presented);
    const type = keyTypeOf(presented);
    if (verdict.status === 'mismatch') {
      const lines = verdict.expected.map((x) => `${knownHostsPath}:${x.line}`).join(', ');
      return new ConnectError(
        target.name,
        'host-key',
        `HOST KEY CHANGED for ${at}: it now presents ${type} ${fp}, which does not match ${lines}. ` +
          'Someone could be intercepting the connection, or the host was reinstalled.',
        { hint: `if the change is expected, remove the old key with: ssh-keygen -R ${hostArg(target)} -f ${knownHostsPath}` },
      );
    }
    if (verdict.status === 'revoked') {
      return new ConnectError(target.name, 'host-key', `host key ${type} ${fp} of ${at} is marked @revoked in ${knownHostsPath}`);
    }
    return new ConnectError(
      target.name,
      'host-key',
      `host key of ${at} is not in ${knownHostsPath} (${type} ${fp}); strict host key checking refuses unknown hosts`,
      { hint: 'check the fingerprint on the host, then add it to known_hosts, or rerun with --accept-new-host-keys' },
    );
  }
  const message = e?.message ?? String(err);
  if (/authentication methods failed/i.test(message) || e?.level === 'client-authentication') {
    const how = target.identityFile ? `the key ${expandHome(target.identityFile)}` : 'the keys in ssh-agent';
    return new ConnectError(target.name, 'auth', `authentication failed for ${target.user}@${at} with ${how}`, {
      hint: `check that the public key is in ~${target.user}/.ssh/authorized_keys on the host, and ssh.user / ssh.identityFile in the inventory`,
      cause: err,
    });
  }
  if (!target.identityFile && !process.env.SSH_AUTH_SOCK && /no (auth|authentication) methods/i.test(message)) {
    return new ConnectError(target.name, 'auth', `no identity file and no ssh-agent to log in to ${at}`, {
      hint: 'set ssh.identityFile in the inventory or start ssh-agent',
    });
  }
  const code = e?.code ? ` (${e.code})` : '';
  return new ConnectError(target.name, 'unreachable', `cannot reach ${at}: ${message}${code}`, { cause: err });
}

function hostArg(target: SshTarget): string {
  return target.port === 22 ? target.address : `'[${target.address}]:${target.port}'`;
}
