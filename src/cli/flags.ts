/** Parsers of flag values shared by the commands: a bad value is a usage error naming the flag. */
import { InvalidArgumentError } from 'commander';

/** A whole number of at least 1 (`--concurrency`, `--probes`). */
export function positive(what: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${what} must be a whole number of at least 1.`);
    return Number(v);
  };
}
