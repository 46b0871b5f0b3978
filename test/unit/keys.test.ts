/** Which keys log in: real key files from ssh-keygen and a real ssh-agent, no host needed. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planKeys, setPassphrasePrompt } from '../../src/connect/keys.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'k8s-ha-keys-'));
const at = (f: string) => path.join(dir, f);
const keygen = (name: string, passphrase = '') => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', name, '-f', at(name)]);
const pub = (name: string) => fs.readFileSync(at(`${name}.pub`), 'utf8').trim().split(/\s+/)[1];

let agent: ChildProcess | undefined;
const socket = at('agent.sock');

beforeAll(async () => {
  keygen('plain');
  keygen('locked', 'correct horse');
  keygen('locked-too', 'battery staple');
  keygen('open');
  fs.chmodSync(at('open'), 0o644);
  agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
  for (let i = 0; i < 50 && !fs.existsSync(socket); i++) await new Promise((r) => setTimeout(r, 20));
  // ssh-add reads the passphrase from an askpass program when there is no terminal.
  const askpass = at('askpass.sh');
  fs.writeFileSync(askpass, '#!/bin/sh\necho "correct horse"\n', { mode: 0o700 });
  execFileSync('ssh-add', [at('locked')], { env: { ...process.env, SSH_AUTH_SOCK: socket, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none' }, stdio: 'ignore' });
});

afterAll(() => {
  agent?.kill();
  setPassphrasePrompt(undefined);
  // Its private keys go with the tests: a test run leaves no key in /tmp.
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('keys, in OpenSSH order', () => {
  it('refuses a private key others can read, as OpenSSH does, and says how to fix it', async () => {
    const plan = await planKeys({ name: 'n', identityFiles: [at('open'), at('plain')] });
    expect(plan.files.map((f) => f.path)).toEqual([at('plain')]);
    expect(plan.skipped).toEqual([`${at('open')} is refused: its permissions 0644 are too open (OpenSSH refuses it too); chmod 600 ${at('open')}`]);
  });

  it('uses a passphrase-protected key through ssh-agent when the agent holds it, agent keys named as identity files first', async () => {
    const plan = await planKeys({ name: 'n', identityFiles: [at('locked'), at('plain')], agent: socket });
    expect(plan.agentKeys).toBe(1);
    expect(plan.files.map((f) => f.path)).toEqual([at('plain')]);
    expect(plan.notes).toEqual([`${at('locked')} is protected by a passphrase: ssh-agent holds it, so the agent signs with it`]);
    const offered = await new Promise<Buffer[]>((resolve) => plan.agent!.getIdentities((_e, keys) => resolve((keys ?? []).map((k) => (k as { getPublicSSH(): Buffer }).getPublicSSH()))));
    expect(offered.map((b) => b.toString('base64'))).toEqual([pub('locked')]);
  });

  it('without the agent, names the locked key and the two ways out', async () => {
    const plan = await planKeys({ name: 'n', identityFiles: [at('locked-too')] });
    expect(plan.files).toEqual([]);
    expect(plan.skipped).toEqual([
      `${at('locked-too')} is protected by a passphrase and ssh-agent does not hold it: add it with "ssh-add ${at('locked-too')}", or rerun with --ask-pass`,
    ]);
  });

  it('with --ask-pass, asks once per key, however many hosts need it, and a wrong passphrase is said', async () => {
    const asked: string[] = [];
    setPassphrasePrompt(async (p) => {
      asked.push(p);
      return p.endsWith('locked-too') ? 'battery staple' : 'wrong';
    });
    const plans = await Promise.all([1, 2, 3].map((i) => planKeys({ name: `n${i}`, identityFiles: [at('locked-too')] })));
    expect(plans.map((p) => p.files.map((f) => [f.path, f.unlocked]))).toEqual([1, 2, 3].map(() => [[at('locked-too'), true]]));
    const wrong = await planKeys({ name: 'n', identityFiles: [at('locked')] });
    expect(wrong.skipped).toEqual([`${at('locked')}: the passphrase given does not unlock it`]);
    expect(asked).toEqual([at('locked-too'), at('locked')]);
    setPassphrasePrompt(undefined);
  });

  it('skips default keys that do not exist, and fails clearly on a named key that does not', async () => {
    const plan = await planKeys({ name: 'n', identityFiles: [at('nothing-here'), at('plain')] });
    expect([plan.files.length, plan.skipped]).toEqual([1, []]);
    await expect(planKeys({ name: 'node-1', identityFile: at('gone') })).rejects.toThrow(`cannot read identity file ${at('gone')}: ENOENT`);
  });

  it('IdentitiesOnly keeps the agent to the keys named as identity files', async () => {
    const only = await planKeys({ name: 'n', identityFiles: [at('plain')], agent: socket, identitiesOnly: true });
    expect(only.agentKeys).toBe(0);
    const all = await planKeys({ name: 'n', identityFiles: [at('plain')], agent: socket });
    expect(all.agentKeys).toBe(1);
  });
});
