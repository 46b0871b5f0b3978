/**
 * The rules for values k8s-ha passes to a shell or writes into a file on a node: a user name and
 * a node-side path. Each is checked where it is loaded (inventory, playbook, ssh_config) and still
 * quoted where it is used; a value these rules accept is never changed by quote(), so a path can
 * be found again in a command line (withStagedPaths) and reads the same in every message.
 */

/**
 * A login name: what useradd makes (letters, digits, `_`, `.`, `-`, a trailing `$`) and what
 * directory services give (SSSD and AD users are `alice@corp.example.com`), never starting with
 * `-` (an option to ssh or sudo), at most 256 characters. No space, quote, `$( )`, `;` or newline:
 * the value is still quoted wherever it is used, this only keeps a typo from ever being a command.
 */
const USER_NAME = /^[A-Za-z0-9_.@][A-Za-z0-9_.@-]*\$?$/;
export const MAX_USER_NAME = 256;

/** Why a login name is not one, with the fix; undefined when it is. */
export function userNameProblem(v: string): string | undefined {
  const fix = `a login name is letters, digits, "_", ".", "@" or "-", not starting with "-" (a trailing "$" allowed), at most ${MAX_USER_NAME} characters`;
  if (v === '') return `is empty: ${fix}`;
  if (!USER_NAME.test(v)) return `${JSON.stringify(v)} is not a user name: ${fix}`;
  if (v.length > MAX_USER_NAME) return `"${v.slice(0, 40)}..." is longer than ${MAX_USER_NAME} characters: ${fix}`;
  return undefined;
}

/**
 * A path on a node: absolute, of letters, digits and `._+@=:,/-` only (not `%`, a specifier in systemd units) (no space, quote, `$`,
 * backquote, glob or newline: nothing a shell or a config file reads specially), and no `..`.
 */
const NODE_PATH = /^\/[A-Za-z0-9._+@=:,/-]*$/;

/** Why a path on a node is not one k8s-ha writes into a script or config, with the fix; undefined when it is. */
export function nodePathProblem(v: string, example = '/etc/k8s-ha/file.conf'): string | undefined {
  if (!v.startsWith('/')) return `must be an absolute path, like ${example}`;
  if (!NODE_PATH.test(v)) {
    const bad = [...v].find((c) => !/[A-Za-z0-9._+@=:,/-]/.test(c))!;
    const shown = /[\x00-\x20\x7f]/.test(bad) ? JSON.stringify(bad) : `"${bad}"`;
    return `holds ${shown}: a path on a node may hold only letters, digits and . _ + @ = : , / - (nothing a shell or a config file reads specially), like ${example}`;
  }
  if (v.split('/').includes('..')) return `must not hold a ".." segment: write the path plainly, like ${example}`;
  return undefined;
}
