/**
 * Which keys log in, in OpenSSH's order (sshconnect2.c, pubkey_prepare):
 *
 *   1. ssh-agent keys that are also named as identity files,
 *   2. the agent's other keys (not with IdentitiesOnly yes),
 *   3. identity files the agent does not hold.
 *
 * A private key readable by group or others is refused, as OpenSSH refuses it. A key protected by
 * a passphrase is used through the agent when the agent holds it; else with the passphrase asked
 * on the terminal (--ask-pass: kept in memory for this run only, never written or logged); else it
 * is left out and named in the error if nothing else logs in.
 */
import './ssh2-certs.js';
import fs from 'node:fs/promises';
import ssh2, { type ParsedKey } from 'ssh2';
import { ConnectError } from '../errors.js';

// ssh2 is CommonJS: its named exports exist only on the default import.
const { OpenSSHAgent, utils } = ssh2;

export interface KeySources {
  /** Host name for messages. */
  name: string;
  /** A key that must be there (the inventory's ssh.identityFile). */
  identityFile?: string;
  /** Keys tried when they exist. */
  identityFiles?: string[];
  identitiesOnly?: boolean;
  /** The agent's socket; undefined: no agent. */
  agent?: string;
}

export interface KeyPlan {
  /** The agent, when it has keys to offer (already filtered and ordered). */
  agent?: InstanceType<typeof OpenSSHAgent>;
  agentKeys: number;
  /** Private keys from files, in order, for keys the agent does not hold (unlocked ones already decrypted). */
  files: { path: string; key: string | ParsedKey; unlocked?: boolean }[];
  /** Why files were left out: too open, locked by a passphrase, unreadable. */
  skipped: string[];
  /** Said once per run (a locked key used through the agent). */
  notes: string[];
}

/**
 * Keys the user unlocked this run (--ask-pass), by path: decrypted once (bcrypt makes that cost
 * about half a second), kept in memory only.
 */
const unlockedKeys = new Map<string, Promise<ParsedKey | string>>();
let prompt: ((keyPath: string) => Promise<string | undefined>) | undefined;

/** --ask-pass: how to ask for a key's passphrase (once per key, whatever the number of hosts). */
export function setPassphrasePrompt(fn: ((keyPath: string) => Promise<string | undefined>) | undefined): void {
  prompt = fn;
  unlockedKeys.clear();
}

type PublicKeyLike = ParsedKey;

/** Notes already said by this process: one per key, not one per host. */
const said = new Set<string>();

/** The agent's keys, listed once per socket per run. */
const agentListings = new Map<string, Promise<PublicKeyLike[]>>();

function listAgent(socket: string): Promise<PublicKeyLike[]> {
  let p = agentListings.get(socket);
  if (!p) {
    p = new Promise((resolve) => new OpenSSHAgent(socket).getIdentities((err, keys) => resolve(err || !keys ? [] : (keys as PublicKeyLike[]))));
    agentListings.set(socket, p);
  }
  return p;
}

/** An agent that offers only the keys we chose, in our order. */
class OrderedAgent extends OpenSSHAgent {
  constructor(
    socket: string,
    private readonly keys: PublicKeyLike[],
  ) {
    super(socket);
  }
  override getIdentities(cb: (err: Error | undefined, keys?: PublicKeyLike[]) => void): void {
    cb(undefined, this.keys);
  }
}

/**
 * The public key of an OpenSSH private key file, readable without its passphrase: the
 * `openssh-key-v1` format stores it in the clear. Else the `.pub` file beside it.
 */
export async function publicBlobOf(text: string, keyPath: string): Promise<Buffer | undefined> {
  const m = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(text);
  if (m) {
    const raw = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
    const magic = Buffer.from('openssh-key-v1\0');
    if (raw.subarray(0, magic.length).equals(magic)) {
      let pos = magic.length;
      const str = () => {
        const len = raw.readUInt32BE(pos);
        const s = raw.subarray(pos + 4, pos + 4 + len);
        pos += 4 + len;
        return s;
      };
      try {
        str(); // cipher
        str(); // kdf
        str(); // kdf options
        const n = raw.readUInt32BE(pos);
        pos += 4;
        if (n >= 1) return Buffer.from(str());
      } catch {
        /* malformed: fall back to the .pub file */
      }
    }
  }
  const pub = await fs.readFile(`${keyPath}.pub`, 'utf8').catch(() => undefined);
  const b64 = pub?.trim().split(/\s+/)[1];
  return b64 ? Buffer.from(b64, 'base64') : undefined;
}

const isLocked = (e: Error) => /encrypted|passphrase/i.test(e.message);

export async function planKeys(s: KeySources): Promise<KeyPlan> {
  const plan: KeyPlan = { agentKeys: 0, files: [], skipped: [], notes: [] };
  const agentKeys = s.agent ? await listAgent(s.agent) : [];
  const inAgent = (blob: Buffer | undefined) => !!blob && agentKeys.some((k) => k.getPublicSSH().equals(blob));
  const named: Buffer[] = [];
  const paths = [...(s.identityFile ? [s.identityFile] : []), ...(s.identityFiles ?? [])].filter((p, i, all) => all.indexOf(p) === i);

  for (const keyPath of paths) {
    const required = keyPath === s.identityFile;
    let text: string;
    try {
      const st = await fs.stat(keyPath);
      const uid = process.getuid?.();
      // OpenSSH's rule: a key its owner lets others read is not a secret any more.
      if (uid !== undefined && st.uid === uid && (st.mode & 0o077) !== 0) {
        plan.skipped.push(
          `${keyPath} is refused: its permissions ${(st.mode & 0o777).toString(8).padStart(4, '0')} are too open (OpenSSH refuses it too); chmod 600 ${keyPath}`,
        );
        continue;
      }
      text = await fs.readFile(keyPath, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (required) {
        throw new ConnectError(s.name, 'auth', `cannot read identity file ${keyPath}: ${err.code ?? err.message}`, {
          hint: 'set ssh.identityFile in the inventory to a private key that exists',
        });
      }
      if (err.code !== 'ENOENT') plan.skipped.push(`${keyPath} cannot be read: ${err.code ?? err.message}`);
      continue;
    }
    const parsed = utils.parseKey(text);
    if (!(parsed instanceof Error)) {
      const key = Array.isArray(parsed) ? parsed[0]! : parsed;
      const blob = key.getPublicSSH();
      named.push(blob);
      if (!inAgent(blob)) plan.files.push({ path: keyPath, key: text });
      continue;
    }
    if (!isLocked(parsed)) {
      plan.skipped.push(`${keyPath} is not a private key ssh2 can read: ${parsed.message}`);
      continue;
    }
    const blob = await publicBlobOf(text, keyPath);
    if (blob) named.push(blob);
    if (inAgent(blob)) {
      const note = `${keyPath} is protected by a passphrase: ssh-agent holds it, so the agent signs with it`;
      if (!said.has(note)) plan.notes.push(note);
      said.add(note);
      continue;
    }
    if (prompt) {
      const ask = prompt;
      let unlocking = unlockedKeys.get(keyPath);
      if (!unlocking) {
        unlocking = ask(keyPath).then((passphrase) => {
          if (passphrase === undefined) return 'no passphrase was given';
          const key = utils.parseKey(text, passphrase);
          return key instanceof Error ? 'the passphrase given does not unlock it' : Array.isArray(key) ? key[0]! : key;
        });
        unlockedKeys.set(keyPath, unlocking);
      }
      const unlocked = await unlocking;
      if (typeof unlocked === 'string') plan.skipped.push(`${keyPath}: ${unlocked}`);
      else plan.files.push({ path: keyPath, key: unlocked, unlocked: true });
      continue;
    }
    plan.skipped.push(
      `${keyPath} is protected by a passphrase and ssh-agent does not hold it: add it with "ssh-add ${keyPath}", or rerun with --ask-pass`,
    );
  }

  if (s.agent && agentKeys.length) {
    const first = agentKeys.filter((k) => named.some((b) => b.equals(k.getPublicSSH())));
    const rest = s.identitiesOnly ? [] : agentKeys.filter((k) => !first.includes(k));
    const offered = [...first, ...rest];
    if (offered.length) {
      plan.agent = new OrderedAgent(s.agent, offered);
      plan.agentKeys = offered.length;
    }
  }
  return plan;
}
