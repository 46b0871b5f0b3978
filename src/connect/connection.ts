/**
 * A host k8s-ha runs commands on: a node over SSH, or this machine. Code that only needs to run a
 * script and fetch a file (the nginx build) takes a Connection and does not care which.
 */
import fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { DeadlineError } from '../errors.js';
import { run } from '../util/exec.js';
import { deadlineOf, secondsOf, STEP_WORDS, type Deadlines } from './deadlines.js';
import type { ExecInput, RemoteResult } from './ssh.js';

export interface Connection {
  /** `controller`, or the node's name in the inventory. */
  readonly name: string;
  /** For messages: `node-1 (root@10.0.0.21)`, `controller`. */
  readonly where: string;
  /** Run a POSIX sh script as root (on this machine: as the user k8s-ha runs as); never throws on a non-zero exit. */
  execAsRoot(script: string, options?: ExecInput): Promise<RemoteResult>;
  /** Copy a file from the host to this machine, read as the login user (SFTP): a root-only file is read through execAsRoot. */
  download(remote: string, local: string): Promise<void>;
  close(): void;
}

async function bufferOf(input: ExecInput['input']): Promise<string | Buffer | undefined> {
  if (input === undefined || typeof input === 'string' || Buffer.isBuffer(input)) return input;
  const chunks: Buffer[] = [];
  for await (const c of input as Readable) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(chunks);
}

/** This machine, through the same interface as a node. */
export class LocalConnection implements Connection {
  readonly name = 'controller';
  readonly where = 'controller';

  constructor(private readonly deadlines?: Deadlines) {}

  /** Bounded like a node's command: past its kind's deadline the script is killed and a DeadlineError says so. */
  async execAsRoot(script: string, options: ExecInput = {}): Promise<RemoteResult> {
    const kind = options.kind ?? 'command';
    const timeoutMs = deadlineOf(kind, this.deadlines);
    const t0 = Date.now();
    const r = await run('sh', ['-c', script], { input: await bufferOf(options.input), timeoutMs, onOutput: options.onOutput });
    if (r.signal === 'SIGKILL' && Date.now() - t0 >= timeoutMs) throw new DeadlineError(this.name, STEP_WORDS[kind], secondsOf(timeoutMs), undefined, `timeouts.${kind}`);
    return { stdout: r.stdout, stderr: r.stderr, code: r.code, signal: r.signal };
  }

  async download(remote: string, local: string): Promise<void> {
    await fsp.copyFile(remote, local);
  }

  close(): void {}
}
