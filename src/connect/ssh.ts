/**
 * One SSH connection per host, reused for every step (node-ssh over ssh2).
 * Host keys are checked against a known_hosts file the way OpenSSH's
 * StrictHostKeyChecking does: `yes` refuses unknown and changed keys,
 * `accept-new` records keys never seen before (and only those), `no` is an
 * explicit opt-out.
 */
// First: ssh2 must learn host certificates before it loads.
import { hostCertificates } from './ssh2-certs.js';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Duplex, Readable } from 'node:stream';
import { NodeSSH } from 'node-ssh';
import type { ClientChannel, SFTPWrapper } from 'ssh2';
import { CommandError, ConnectError, DeadlineError } from '../errors.js';
import { deadlineOf, MAX_OUTPUT_BYTES, secondsOf, STEP_WORDS, type Deadlines, type StepKind } from './deadlines.js';
import type { Connection } from './connection.js';
import { countsOf, countStream, type SshCounts } from './counts.js';
import { quote } from '../util/quote.js';
import { formatHostPort } from '../util/hostport.js';
import { planKeys, type KeySources } from './keys.js';
import {
  checkHostKey,
  fingerprint,
  keyTypeOf,
  knownHostsLine,
  plainKeyOf,
  preferredHostKeyTypes,
  parseKnownHosts,
  parseRevokedKeys,
  type HostKeyCheck,
  type KnownHostEntry,
} from './known-hosts.js';

export type StrictHostKeyChecking = 'yes' | 'accept-new' | 'no';

export interface SshTarget {
  /** The host's name in the inventory (or `bastion user@host`), used in every message. */
  name: string;
  /** The address dialed. */
  address: string;
  /** Where the address came from: `inventory`, `HostName at FILE:LINE`, `name`... */
  addressFrom?: string;
  port: number;
  user: string;
  /** A private key that must exist (the inventory's ssh.identityFile). */
  identityFile?: string;
  /** More keys, tried in order when they exist (ssh_config's IdentityFile, else OpenSSH's defaults). */
  identityFiles?: string[];
  /** ssh_config IdentitiesOnly: offer only the agent keys that are also identity files. */
  identitiesOnly?: boolean;
  /** ssh-agent's socket; undefined: $SSH_AUTH_SOCK; null: no agent. */
  identityAgent?: string | null;
  /** User known_hosts file(s): the first one is where accept-new records keys. */
  knownHostsFile: string | string[];
  /** System-wide known_hosts files, read only (/etc/ssh/ssh_known_hosts). */
  globalKnownHostsFiles?: string[];
  strictHostKeyChecking: StrictHostKeyChecking;
  /** ssh_config RevokedHostKeys: a file of public keys refused for every host, whatever StrictHostKeyChecking says. */
  revokedHostKeys?: { file: string; from: string };
  connectTimeoutMs?: number;
  /** With accept-new: trust a key never seen before for this session only, without recording it (deploy --check writes nothing). */
  readOnly?: boolean;
  /** The bastion in front of this host (which may have one in front of it). */
  jump?: SshTarget;
  /** ssh_config ProxyCommand, tokens expanded: its stdin/stdout carry the connection. */
  proxyCommand?: string;
  /** This target is a bastion: not counted as a node session. */
  bastion?: boolean;
  /** The inventory's deadlines per kind of step (timeouts:); the defaults where unset. */
  deadlines?: Deadlines;
}

export interface ExecInput {
  /** Standard input for the command: text, bytes, or a stream (a tarball, a binary). */
  input?: string | Buffer | Readable;
  /** What kind of step this is: it sets the command's deadline (deadlines.ts). Default `command`. */
  kind?: StepKind;
  /** Called with each piece of stdout as it arrives. */
  onOutput?: (chunk: string) => void;
}

/**
 * Renews a node's lock lease: the holder on the node exits (and its flock goes) when no byte has
 * come for LOCK_LEASE_S, so a controller that vanishes without a FIN releases every node's lock
 * within that bound instead of after sshd's or TCP's keepalive (hours by default).
 */
export const LOCK_RENEW_MS = 5_000;
export const LOCK_LEASE_S = 30;

export interface RemoteResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
}

/**
 * Write `text` down a held script's channel and wait, within the deadline of `kind`, until what the
 * script prints after it satisfies `until`: a request to a script that is already running, with no
 * channel, command or process of its own. Rejects when the script ends first or time runs out (the
 * script is then released).
 */
export type Ask = (text: string, until: (out: string) => boolean, kind: StepKind) => Promise<string>;

export function expandHome(p: string): string {
  return p === '~' ? os.homedir() : p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p;
}

/** The keys a target logs in with, paths expanded, and its agent ($SSH_AUTH_SOCK unless the target says otherwise). */
export function keySourcesOf(target: SshTarget): KeySources {
  return {
    name: target.name,
    identityFile: target.identityFile ? expandHome(target.identityFile) : undefined,
    identityFiles: target.identityFiles?.map(expandHome),
    identitiesOnly: target.identitiesOnly,
    agent: target.identityAgent === undefined ? process.env.SSH_AUTH_SOCK : (target.identityAgent ?? undefined),
  };
}

export class SshConnection implements Connection {
  /**
   * --verbose: told each login (who, where, through what, the host key that was checked) and each
   * command's kind, size, exit and time. Never a command's text or output: scripts carry file
   * contents, and secrets among them.
   */
  static trace?: (line: string) => void;
  /** Connections open now and the most open at once in this process: what --concurrency bounds. */
  static openNow = 0;
  static peak = 0;
  private closed = false;

  /** Set when the connection died (keepalive timeout, reset): every later command fails at once. */
  private lost?: Error;
  /** What this host has cost this process (counts.ts). */
  private readonly counts: SshCounts;

  private constructor(
    readonly target: SshTarget,
    private readonly ssh: NodeSSH,
  ) {
    this.counts = countsOf(target.name);
    this.counts.logins++;
    // node-ssh drops its 'error' listener once connected; without ours, a node that dies while we
    // wait (keepalive timeout, ECONNRESET) would be an unhandled 'error' event and crash the run.
    const client = ssh.connection;
    client?.on('error', (e: Error) => (this.lost ??= e));
    client?.on('close', () => (this.lost ??= new Error('connection closed')));
  }

  /** Called once when the connection ends, whatever the reason. */
  onLost(fn: () => void): void {
    const client = this.ssh.connection;
    if (!client) fn();
    else client.once('close', fn);
  }

  private lostError(): ConnectError {
    return new ConnectError(this.target.name, 'unreachable', `connection to ${formatHostPort(this.target.address, this.target.port)} lost: ${this.lost?.message ?? 'no answer'}`);
  }

  get name(): string {
    return this.target.name;
  }

  get where(): string {
    return `${this.target.name} (${this.target.user}@${this.target.address})`;
  }

  /** Bastion logins made by this process (each bastion is logged in to once and shared). */
  static get bastionLogins(): number {
    return jumps.logins;
  }

  /** Close bastion connections no node uses any more (at the end of a run: no linger). */
  static closeIdleBastions(): void {
    jumps.closeIdle();
  }

  static async open(target: SshTarget): Promise<SshConnection> {
    const userFiles = ([] as string[]).concat(target.knownHostsFile).map(expandHome);
    const all = [...userFiles, ...(target.globalKnownHostsFiles ?? []).map(expandHome)];
    const texts = await Promise.all(all.map(readIfThere));
    const entries = [...all.flatMap((f, i) => parseKnownHosts(texts[i] ?? '', f)), ...(await revokedKeysOf(target))];
    // Named in messages: the file accept-new writes to, and every other file that exists.
    const files = all.filter((_, i) => i === 0 || texts[i] !== undefined);
    let verdict: HostKeyCheck | undefined;
    let presented: Buffer | undefined;

    const keys = await planKeys(keySourcesOf(target));
    const methods = [
      ...(keys.agent ? [{ type: 'agent' as const, username: target.user, agent: keys.agent }] : []),
      ...keys.files.map((f) => ({ type: 'publickey' as const, username: target.user, key: f.key })),
    ];
    if (!methods.length) {
      throw new ConnectError(target.name, 'auth', `no key to log in to ${target.user}@${formatHostPort(target.address, target.port)}${keys.skipped.length ? `: ${keys.skipped.join('; ')}` : ''}`, {
        hint: 'set ssh.identityFile in the inventory, or load a key into ssh-agent (ssh-add)',
      });
    }

    // Through a bastion or a ProxyCommand: the transport is a stream, not a TCP connection of ours.
    const route = await openRoute(target);
    const preferred = preferredHostKeyTypes(entries, target.address, target.port, hostCertificates);
    const ssh = new NodeSSH();
    try {
      await ssh.connect({
        host: target.address,
        port: target.port,
        sock: route?.sock as never,
        username: target.user,
        authHandler: methods as never,
        readyTimeout: target.connectTimeoutMs ?? 10_000,
        // A node that dies mid-run (or mid-roll) is noticed within about 10 s, not minutes.
        keepaliveInterval: 3_000,
        keepaliveCountMax: 3,
        algorithms: preferred.length ? { serverHostKey: { prepend: preferred as never[] } as never } : undefined,
        hostVerifier: (key: Buffer) => {
          presented = key;
          verdict = checkHostKey(entries, target.address, target.port, key);
          // As OpenSSH: a key or CA marked @revoked is refused whatever StrictHostKeyChecking says.
          if (verdict.status === 'revoked') return false;
          if (target.strictHostKeyChecking === 'no') return true;
          if (verdict.status === 'match') return true;
          return verdict.status === 'unknown' && target.strictHostKeyChecking === 'accept-new';
        },
      });
    } catch (err) {
      ssh.dispose();
      route?.release();
      throw classifyConnectError(target, files, err, verdict, presented, keys.skipped, route?.failure());
    }
    const knownHostsPath = userFiles[0];
    if (verdict?.status === 'unknown' && target.strictHostKeyChecking === 'accept-new' && presented && knownHostsPath && !target.readOnly) {
      try {
        // ~/.ssh as ssh-keygen makes it: the user's alone.
        await fs.mkdir(path.dirname(knownHostsPath), { recursive: true, mode: 0o700 });
        await fs.appendFile(knownHostsPath, knownHostsLine(target.address, target.port, plainKeyOf(presented)) + '\n', { mode: 0o644 });
      } catch (e) {
        ssh.dispose();
        route?.release();
        throw new ConnectError(target.name, 'host-key', `cannot record the host key of ${formatHostPort(target.address, target.port)} in ${knownHostsPath}: ${(e as Error).message}`, {
          hint: `make ${knownHostsPath} writable, or add the key to it by hand`,
        });
      }
    }
    if (!target.bastion) {
      SshConnection.openNow++;
      SshConnection.peak = Math.max(SshConnection.peak, SshConnection.openNow);
    }
    const conn = new SshConnection(target, ssh);
    SshConnection.trace?.(
      `${target.name}: logged in as ${target.user} to ${formatHostPort(target.address, target.port)}${target.jump ? ` through ${target.jump.name}` : ''}; host key ${presented ? `${keyTypeOf(presented)} ${fingerprint(plainKeyOf(presented))}` : '?'} (${verdict?.status ?? 'unchecked'})`,
    );
    conn.releaseRoute = route?.release;
    // The bastion's notes (its key, used first) travel with the first node session through it.
    conn.notes = [...(route?.notes?.splice(0) ?? []), ...keys.notes];
    if (target.strictHostKeyChecking === 'no' && verdict && verdict.status !== 'match' && presented) {
      const what = verdict.status === 'unknown' ? 'it is in no known_hosts file' : verdict.status === 'mismatch' ? `it does NOT match ${verdict.expected.map((x) => `${x.file}:${x.line}`).join(', ')}` : verdict.status === 'cert-invalid' ? `its certificate is refused: ${verdict.reason}` : verdict.status;
      conn.notes.push(`${target.name}: host key ${keyTypeOf(presented)} ${fingerprint(plainKeyOf(presented))} of ${formatHostPort(target.address, target.port)} accepted UNCHECKED (StrictHostKeyChecking no): ${what}`);
    }
    if (!hostCertificates && !certsSaid && entries.some((e) => e.marker === '@cert-authority')) {
      certsSaid = true;
      const ca = entries.find((e) => e.marker === '@cert-authority')!;
      conn.notes.push(
        `host certificates cannot be negotiated with this ssh2 version, so the @cert-authority lines (${ca.file}:${ca.line}) vouch for no host: ` +
          'hosts known only through them fail as unknown; add their plain keys to known_hosts, or use the ssh2 version in package.json',
      );
    }
    return conn;
  }

  /** Gives back the bastion (or ends the ProxyCommand) this connection went through. */
  private releaseRoute?: () => void;
  /** What the connection learnt about its keys (a locked key used through the agent...). */
  notes: string[] = [];

  /** A command about to run in a channel of its own: counted, and its text as bytes sent. */
  private countCommand(command: string): SshCounts {
    this.counts.execs++;
    this.counts.channels++;
    this.counts.bytesOut += Buffer.byteLength(command);
    return this.counts;
  }

  /** True when commands must go through sudo to act as root. */
  get needsSudo(): boolean {
    return this.target.user !== 'root';
  }

  /**
   * Run a shell command line as the login user; never throws on a non-zero exit. Every command has
   * a deadline (its kind's, from the inventory's timeouts or the defaults) and a cap on what it may
   * print: past either, its channel is closed and a DeadlineError names the step. The connection
   * itself stays usable.
   */
  async exec(command: string, options: ExecInput = {}): Promise<RemoteResult> {
    if (this.lost) throw this.lostError();
    const client = this.ssh.connection;
    if (!client) throw this.lostError();
    const kind = options.kind ?? 'command';
    const deadlineMs = deadlineOf(kind, this.target.deadlines);
    const counts = this.countCommand(command);
    const started = Date.now();
    const r = await new Promise<RemoteResult>((resolve, reject) => {
      // The deadline runs from the request: a server that never opens the channel is bounded too.
      let channel: ClientChannel | undefined;
      let done = false;
      const finish = (e?: Error, result?: RemoteResult) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (e) {
          channel?.close();
          reject(e);
        } else resolve(result!);
      };
      const timer = setTimeout(() => finish(new DeadlineError(this.target.name, STEP_WORDS[kind], secondsOf(deadlineMs), undefined, `timeouts.${kind}`)), deadlineMs);
      client.exec(command, (err, ch) => {
        if (err) {
          this.lost ??= err;
          finish(this.lostError());
          return;
        }
        channel = ch;
        // Opened after the deadline: closed at once.
        if (done) return ch.close();
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        let outBytes = 0;
        let errBytes = 0;
        let code: number | null = null;
        let signal: string | null = null;
        const tooMuch = () => finish(new DeadlineError(this.target.name, STEP_WORDS[kind], secondsOf(deadlineMs), MAX_OUTPUT_BYTES));
        ch.on('data', (b: Buffer) => {
          counts.bytesIn += b.length;
          if ((outBytes += b.length) > MAX_OUTPUT_BYTES) return tooMuch();
          out.push(b);
          options.onOutput?.(b.toString());
        });
        ch.stderr.on('data', (b: Buffer) => {
          counts.bytesIn += b.length;
          if ((errBytes += b.length) > MAX_OUTPUT_BYTES) return tooMuch();
          errs.push(b);
        });
        ch.on('exit', (c: number | null, sig?: string) => {
          code = c ?? null;
          signal = sig ?? null;
        });
        ch.on('close', () => finish(undefined, { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(errs).toString(), code, signal }));
        const input = options.input;
        if (input === undefined) ch.end();
        else if (typeof input === 'string' || Buffer.isBuffer(input)) {
          counts.bytesOut += Buffer.byteLength(input);
          ch.end(input);
        } else {
          input.on('error', (e) => finish(e));
          input.on('data', (b: Buffer | string) => (counts.bytesOut += Buffer.byteLength(b)));
          input.pipe(ch);
        }
      });
    });
    SshConnection.trace?.(`${this.target.name}: ${STEP_WORDS[kind]} (${Buffer.byteLength(command)} B${options.input ? ' and input' : ''}): exit ${r.code ?? r.signal ?? '?'} in ${Date.now() - started} ms, ${r.stdout.length + r.stderr.length} B back`);
    // No exit code and no signal: the connection went away under the command. What it did is unknown.
    if (r.code === null && r.signal === null) {
      this.lost ??= new Error('the command got no exit status');
      throw this.lostError();
    }
    return r;
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

  /**
   * An SFTP session as the login user (not root, no sudo): what a build store on this host
   * (build.store HOST:PATH) is read and written through. The caller bounds each operation.
   */
  async sftp(): Promise<SFTPWrapper> {
    if (this.lost) throw this.lostError();
    this.counts.channels++;
    return this.ssh.requestSFTP();
  }

  /** Copy a file from the host to this machine (SFTP). */
  async download(remote: string, local: string): Promise<void> {
    this.counts.channels++;
    await this.ssh.getFile(local, remote);
    this.counts.bytesIn += (await fs.stat(local)).size;
  }

  /**
   * Start a script (as root) that keeps running until released: resolves once its output so far
   * satisfies `ready`, or it exits. Closing the channel, or losing the connection, ends it: what it
   * holds (a lock) cannot outlive this controller. A byte goes down the channel every
   * LOCK_RENEW_MS: the script may treat their absence as a vanished controller (the lock's lease).
   * Not ready in time: released, and a DeadlineError. The time is the deadline of the step the
   * script is in, as `phase` reads it from the output so far (the lock's, plus `waitMs` the caller
   * asked to wait; then the facts' once they start), counted from when that step began. Once
   * ready, `ask` sends it a request and reads its answer (one at a time).
   */
  hold(
    script: string,
    ready: (stdout: string) => boolean,
    /** Called with the release function as soon as the channel is open (to give up a wait early). */
    onOpen?: (release: () => void) => void,
    waitMs = 0,
    phase: (stdout: string) => StepKind = () => 'lock',
  ): Promise<{ stdout: string; exited: boolean; code: number | null; release: () => void; ask: Ask }> {
    if (this.lost) return Promise.reject(this.lostError());
    const client = this.ssh.connection;
    if (!client) return Promise.reject(this.lostError());
    const command = this.needsSudo ? `sudo -n -- sh -c ${quote(script)}` : script;
    const counts = this.countCommand(command);
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
        // Once ready: what the script says after each ask, and the one ask waiting for its answer.
        let exitedNow = false;
        let answer = '';
        let asking: { until: (out: string) => boolean; resolve: (out: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
        const endAsk = (e?: Error) => {
          const a = asking;
          if (!a) return;
          asking = undefined;
          clearTimeout(a.timer);
          if (e) a.reject(e);
          else a.resolve(answer);
        };
        const ask: Ask = (text, until, askKind) =>
          new Promise<string>((res, rej) => {
            if (exitedNow || asking) {
              rej(new Error(exitedNow ? 'the held script has ended or was released' : 'an ask is already waiting'));
              return;
            }
            answer = '';
            const ms = deadlineOf(askKind, this.target.deadlines);
            asking = { until, resolve: res, reject: rej, timer: setTimeout(() => {
              release();
              endAsk(new DeadlineError(this.target.name, STEP_WORDS[askKind], secondsOf(ms), undefined, `timeouts.${askKind}`));
            }, ms) };
            counts.bytesOut += Buffer.byteLength(text);
            channel.write(text);
          });
        // The lease: renewed from the start, since the holder's clock starts when it takes the lock.
        const renew = setInterval(() => {
          counts.bytesOut++;
          channel.write('.');
        }, LOCK_RENEW_MS);
        renew.unref();
        const release = () => {
          clearInterval(renew);
          exitedNow = true;
          channel.end();
          channel.close();
        };
        onOpen?.(release);
        let kind = phase('');
        let deadlineMs = 0;
        let timer: NodeJS.Timeout | undefined;
        const arm = () => {
          clearTimeout(timer);
          deadlineMs = deadlineOf(kind, this.target.deadlines) + (kind === 'lock' ? waitMs : 0);
          timer = setTimeout(() => {
            if (settled) return;
            settled = true;
            release();
            reject(new DeadlineError(this.target.name, STEP_WORDS[kind], secondsOf(deadlineMs), undefined, `timeouts.${kind}`));
          }, deadlineMs);
        };
        arm();
        const settle = (exited: boolean, code: number | null) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (exited) clearInterval(renew);
          resolve({ stdout: exited && !stdout.trim() ? stderr : stdout, exited, code, release, ask });
        };
        channel.on('data', (b: Buffer) => {
          counts.bytesIn += b.length;
          if (settled) {
            if (asking && answer.length < MAX_OUTPUT_BYTES) {
              answer += b.toString();
              if (asking.until(answer)) endAsk();
            }
            return;
          }
          stdout += b.toString();
          if (stdout.length > MAX_OUTPUT_BYTES) {
            settled = true;
            clearTimeout(timer);
            release();
            reject(new DeadlineError(this.target.name, STEP_WORDS.lock, secondsOf(deadlineMs), MAX_OUTPUT_BYTES));
          } else if (ready(stdout)) settle(false, null);
          else if (phase(stdout) !== kind) {
            kind = phase(stdout);
            arm();
          }
        });
        channel.stderr.on('data', (b: Buffer) => {
          counts.bytesIn += b.length;
          if (stderr.length < 64 * 1024) stderr += b.toString();
        });
        channel.on('exit', (code: number | null) => settle(true, code));
        channel.on('close', () => {
          clearInterval(renew);
          exitedNow = true;
          endAsk(this.lost ? this.lostError() : new Error('the held script ended before it answered'));
          settle(true, null);
        });
      });
    });
  }

  /** A TCP stream opened by the host itself to address:port (an SSH direct-tcpip channel). */
  async connectFromHost(address: string, port: number): Promise<Duplex> {
    const counts = this.counts;
    counts.channels++;
    const ch = await this.ssh.forwardOut('127.0.0.1', 0, address, port);
    countStream(ch, counts);
    // ssh2 keeps no count of a channel's bytes, and a stream of ours in between would copy every byte
    // and have to pass on end, close and errors: these two count where the channel takes bytes in and out.
    const push = ch.push.bind(ch);
    ch.push = (chunk: unknown, encoding?: BufferEncoding) => {
      if (chunk) counts.bytesIn += (chunk as Buffer).length;
      return push(chunk, encoding);
    };
    const write = ch._write.bind(ch);
    ch._write = (chunk: Buffer, encoding: BufferEncoding, cb: (e?: Error | null) => void) => {
      counts.bytesOut += chunk.length;
      write(chunk, encoding, cb);
    };
    return ch;
  }

  close(): void {
    if (!this.closed && !this.target.bastion) SshConnection.openNow--;
    if (!this.closed) this.releaseRoute?.();
    this.closed = true;
    this.ssh.dispose();
  }
}

/** A known_hosts file's text, or undefined when there is none (or it cannot be read, as ssh skips it). */
/**
 * The keys of ssh_config's RevokedHostKeys, or why they cannot be had. As OpenSSH, a revocation
 * list that cannot be read is not taken as an empty one: the host is refused (deploy checks the
 * file before any connection, so this is a file that changed during the run).
 */
export async function readRevokedKeys(r: { file: string; from: string }): Promise<{ entries: KnownHostEntry[] } | { problem: string }> {
  let content: Buffer;
  try {
    content = await fs.readFile(expandHome(r.file));
  } catch (e) {
    return { problem: `${r.file} (${r.from}) cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  const parsed = parseRevokedKeys(content, r.file);
  return 'problem' in parsed ? { problem: `${parsed.problem} (${r.from})` } : parsed;
}

async function revokedKeysOf(target: SshTarget): Promise<KnownHostEntry[]> {
  if (!target.revokedHostKeys) return [];
  const r = await readRevokedKeys(target.revokedHostKeys);
  if ('problem' in r) throw new ConnectError(target.name, 'host-key', `no host key can be trusted: ${r.problem}`, { hint: 'correct the RevokedHostKeys file, or the ssh_config line that names it' });
  return r.entries;
}

async function readIfThere(file: string): Promise<string | undefined> {
  return fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR' || e.code === 'EACCES' || e.code === 'EISDIR') return undefined;
    throw e;
  });
}

function classifyConnectError(
  target: SshTarget,
  files: string[],
  err: unknown,
  verdict: HostKeyCheck | undefined,
  presented: Buffer | undefined,
  skippedKeys: string[],
  routeFailure: string | undefined,
): ConnectError {
  const e = err as Error & { code?: string; level?: string };
  const at = formatHostPort(target.address, target.port);
  if (verdict && presented && verdict.status !== 'match' && (target.strictHostKeyChecking !== 'no' || verdict.status === 'revoked')) {
    let fp: string;
    try {
      fp = fingerprint(plainKeyOf(presented));
    } catch {
      fp = fingerprint(presented);
    }
    const type = keyTypeOf(presented);
    if (verdict.status === 'mismatch') {
      const lines = verdict.expected.map((x) => `${x.file}:${x.line}`).join(', ');
      return new ConnectError(
        target.name,
        'host-key',
        `HOST KEY CHANGED for ${at}: it now presents ${type} ${fp}, which does not match ${lines}. ` +
          'Someone could be intercepting the connection, or the host was reinstalled.',
        { hint: `if the change is expected, remove the old key with: ssh-keygen -R ${hostArg(target)} -f ${verdict.expected[0]?.file ?? files[0]}` },
      );
    }
    if (verdict.status === 'revoked') {
      const where = `${verdict.entry.file}:${verdict.entry.line}`;
      const why = verdict.entry.revokedList ? `is listed as revoked in ${where} (${target.revokedHostKeys?.from ?? 'RevokedHostKeys'})` : `is marked @revoked in ${where}`;
      return new ConnectError(target.name, 'host-key', `host key ${type} ${fp} of ${at} ${why}`);
    }
    if (verdict.status === 'cert-invalid') {
      return new ConnectError(target.name, 'host-key', `host certificate of ${at} (${type}, key ${fp}) is refused: ${verdict.reason}`, {
        hint: 're-sign the host key with the CA named by @cert-authority for this host, or add the plain host key to known_hosts',
      });
    }
    return new ConnectError(
      target.name,
      'host-key',
      `host key of ${at} is not in ${files.join(', ')} (${type} ${fp}); strict host key checking refuses unknown hosts`,
      { hint: 'check the fingerprint on the host, then add it to known_hosts, or rerun with --accept-new-host-keys' },
    );
  }
  const message = e?.message ?? String(err);
  if (/authentication methods failed/i.test(message) || e?.level === 'client-authentication') {
    const k = keySourcesOf(target);
    const tried = [
      k.identityFile ? `the key ${k.identityFile}` : undefined,
      ...(k.identityFiles ?? []).filter((f) => f !== k.identityFile && !skippedKeys.some((x) => x.startsWith(f))),
    ].filter(Boolean);
    const how = tried.length ? `with ${tried.join(', ')} and the agent's keys` : 'with the keys in ssh-agent';
    return new ConnectError(
      target.name,
      'auth',
      `authentication failed for ${target.user}@${at} ${how}${skippedKeys.length ? ` (not tried: ${skippedKeys.join('; ')})` : ''}`,
      {
        hint: `check that the public key is in ~${target.user}/.ssh/authorized_keys on the host, and ssh.user / ssh.identityFile in the inventory`,
        cause: err,
      },
    );
  }
  if (routeFailure) return new ConnectError(target.name, 'unreachable', `cannot reach ${at}: ${routeFailure}`, { cause: err });
  const code = e?.code && !message.includes(e.code) ? ` (${e.code})` : '';
  const via = target.jump ? ` through ${target.jump.name}` : '';
  return new ConnectError(target.name, 'unreachable', `cannot reach ${at}${via}: ${message}${code}`, { cause: err });
}

function hostArg(target: SshTarget): string {
  return target.port === 22 ? target.address : `'[${target.address}]:${target.port}'`;
}

interface Route {
  sock: Duplex;
  /** Notes of the bastion connection, not yet said. */
  notes?: string[];
  release: () => void;
  /** What went wrong on the way (the ProxyCommand's stderr), for the error message. */
  failure: () => string | undefined;
}

/** The transport to a host behind a bastion (a channel of the shared bastion connection) or a ProxyCommand. */
async function openRoute(target: SshTarget): Promise<Route | undefined> {
  if (target.jump) {
    const bastion = await jumps.acquire(target.jump).catch((e: ConnectError) => {
      throw new ConnectError(target.name, e.kind ?? 'unreachable', `cannot reach ${formatHostPort(target.address, target.port)} through ${target.jump!.name}, which failed: ${e.detail ?? e.message}`, {
        hint: e.hint,
        cause: e,
      });
    });
    try {
      // The bastion's own connect may wait minutes for a host that drops packets: bound it like a direct connect.
      const timeoutMs = target.connectTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      const channel = bastion.conn.connectFromHost(target.address, target.port);
      const sock = await Promise.race([
        channel,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            // A channel that opens after we gave up is closed at once.
            channel.then((late) => late.destroy(), () => undefined);
            reject(new Error(`no connection within ${timeoutMs / 1000} s`));
          }, timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      return { sock, release: bastion.release, failure: () => undefined, notes: bastion.conn.notes };
    } catch (e) {
      bastion.release();
      throw new ConnectError(
        target.name,
        'unreachable',
        `${target.jump.name} cannot open a connection to ${formatHostPort(target.address, target.port)}: ${(e as Error).message}`,
        { hint: `check from the bastion: ssh ${target.jump.user}@${target.jump.address} nc -zv ${target.address} ${target.port}`, cause: e },
      );
    }
  }
  if (target.proxyCommand) {
    const child = spawn('/bin/sh', ['-c', `exec ${target.proxyCommand}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let exit: string | undefined;
    child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    child.on('exit', (code, signal) => (exit = signal ? `signal ${signal}` : `exit ${code}`));
    child.on('error', (e) => (exit = e.message));
    const sock = Duplex.from({ readable: child.stdout, writable: child.stdin });
    // ssh2 destroys its socket on close; the child's pipes then close and it ends.
    sock.on('error', () => {});
    return {
      sock,
      release: () => {
        if (child.exitCode === null) child.kill();
      },
      failure: () => (exit ? `ProxyCommand "${target.proxyCommand}" ended (${exit})${stderr.trim() ? `: ${stderr.trim().split('\n').pop()}` : ''}` : undefined),
    };
  }
  return undefined;
}

/**
 * One connection per bastion, shared by every host behind it: 200 nodes behind one bastion make
 * one bastion login, each node a channel of it (direct-tcpip). A bastion that failed is not
 * tried again for a few seconds, so every node behind it reports the same one failure.
 */
/** A bastion connection and the sessions using it. */
interface JumpSlot {
  conn: Promise<SshConnection>;
  users: number;
  idle?: NodeJS.Timeout;
  failedAt?: number;
}

class Jumps {
  logins = 0;
  private readonly open = new Map<string, JumpSlot>();

  private key(t: SshTarget): string {
    return `${t.user}@${t.address}:${t.port}${t.proxyCommand ? `|${t.proxyCommand}` : ''}${t.jump ? `<${this.key(t.jump)}` : ''}`;
  }

  async acquire(bastion: SshTarget): Promise<{ conn: SshConnection; release: () => void }> {
    const key = this.key(bastion);
    let slot = this.open.get(key);
    if (slot?.failedAt !== undefined && Date.now() - slot.failedAt > FAILED_BASTION_MS) {
      this.open.delete(key);
      slot = undefined;
    }
    if (!slot) {
      const s: JumpSlot = {
        users: 0,
        conn: SshConnection.open(bastion).then(
          (c) => {
            this.logins++;
            c.onLost(() => this.open.get(key) === s && this.open.delete(key));
            return c;
          },
          (e) => {
            s.failedAt = Date.now();
            throw e;
          },
        ),
      };
      slot = s;
      this.open.set(key, s);
    }
    const s = slot;
    s.users++;
    clearTimeout(s.idle);
    let conn: SshConnection;
    try {
      conn = await s.conn;
    } catch (e) {
      s.users--;
      throw e;
    }
    let released = false;
    return {
      conn,
      release: () => {
        if (released) return;
        released = true;
        if (--s.users > 0) return;
        // A run that reconnects in batches reuses the bastion: keep it a moment.
        s.idle = setTimeout(() => this.drop(key, s), BASTION_LINGER_MS);
        s.idle.unref();
      },
    };
  }

  private drop(key: string, s: JumpSlot): void {
    if (s.users > 0) return;
    if (this.open.get(key) === s) this.open.delete(key);
    s.conn.then((c) => c.close(), () => {});
  }

  closeIdle(): void {
    for (const [key, s] of this.open) if (s.users <= 0) this.drop(key, s);
  }
}

/** The missing host-certificate capability is said once per run. */
let certsSaid = false;

const FAILED_BASTION_MS = 5_000;
const BASTION_LINGER_MS = 2_000;
const jumps = new Jumps();
