/**
 * --ask-pass: ask for the passphrase of each protected key a run needs, on the terminal, before
 * the run starts (never in the middle of a live task list). Each key is asked once, whatever the
 * number of hosts; the passphrase is not echoed, not stored, not logged.
 */
import readline from 'node:readline';
import { UsageError } from '../errors.js';
import { planKeys, setPassphrasePrompt } from '../connect/keys.js';
import { keySourcesOf, type SshTarget } from '../connect/ssh.js';

function readHidden(question: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
    process.stderr.write(question);
    // Echo nothing of what is typed.
    (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
    let answered = false;
    rl.on('line', (line) => {
      answered = true;
      rl.close();
      process.stderr.write('\n');
      resolve(line);
    });
    rl.on('close', () => {
      process.stdin.pause();
      if (!answered) resolve(undefined);
    });
  });
}

/** Set up the prompt and unlock, one by one, every protected key the targets (and their bastions) would use. */
export async function unlockKeys(targets: Iterable<SshTarget>): Promise<void> {
  if (!process.stdin.isTTY) {
    throw new UsageError('--ask-pass needs a terminal to ask on', { hint: 'load the key into ssh-agent (ssh-add) for runs without a terminal' });
  }
  setPassphrasePrompt((keyPath) => readHidden(`Enter passphrase for key '${keyPath}': `));
  const seen = new Set<string>();
  for (const first of targets) {
    for (let t: SshTarget | undefined = first; t; t = t.jump) {
      const sources = keySourcesOf(t);
      const key = JSON.stringify([sources.identityFile, sources.identityFiles]);
      if (seen.has(key)) continue;
      seen.add(key);
      await planKeys(sources);
    }
  }
}
