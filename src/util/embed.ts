/**
 * A script run inside a bigger one whose output is read by its @@ markers (the facts, the apply
 * script): its output comes between `@@MARKER` and `@@MARKER-end`, its own @@ lines kept apart as
 * `@ ...`, its stderr dropped; `embedded` gives the output back as the script printed it.
 */
export function embed(marker: string, script: string): string {
  return `echo "@@${marker}"; (\n${script}\n) 2>/dev/null | sed 's/^@@/@ /'; echo "@@${marker}-end"`;
}

/** What the script embedded under `marker` printed; undefined when the bigger script stopped before it. */
export function embedded(stdout: string, marker: string): string | undefined {
  return new RegExp(`^@@${marker}\\n([\\s\\S]*?)^@@${marker}-end$`, 'm').exec(stdout)?.[1]?.replace(/^@ /gm, '@@');
}
