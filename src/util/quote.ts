/**
 * Quote one word for a POSIX shell. Every command k8s-ha builds for a shell
 * (remote or local) is assembled from parts passed through here.
 */
export function quote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_./:=@%+,-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Build a shell command line from words, each quoted. */
export function shellCommand(words: readonly string[]): string {
  return words.map(quote).join(' ');
}
