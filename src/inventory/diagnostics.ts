import { UsageError } from '../errors.js';

export type InventoryPath = (string | number)[];

export interface Diagnostic {
  severity: 'error' | 'warning';
  path: InventoryPath;
  message: string;
  line?: number;
  col?: number;
}

/** `nodes[2].address`, the way a reader names a place in the file. */
export function formatPath(path: InventoryPath): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${p}` : p;
  return out || '(top level)';
}

export function formatDiagnostic(file: string, d: Diagnostic): string {
  const where = d.line ? `${file}:${d.line}:${d.col ?? 1}` : file;
  return `${where}: ${d.severity === 'warning' ? 'warning: ' : ''}${formatPath(d.path)}: ${d.message}`;
}

/** Errors listed in full; a file with more (a wrong file, most likely) gets a count of the rest. */
export const SHOWN_ERRORS = 50;

/** Every error in an inventory at once, each with file:line:col and its path. */
export class InventoryError extends UsageError {
  constructor(
    readonly file: string,
    readonly diagnostics: Diagnostic[],
    what: 'inventory' | 'playbook' = 'inventory',
  ) {
    const errors = diagnostics.filter((d) => d.severity === 'error');
    const more = errors.length - SHOWN_ERRORS;
    super(
      `${file}: ${errors.length} error${errors.length === 1 ? '' : 's'} in the ${what}\n` +
        errors
          .slice(0, SHOWN_ERRORS)
          .map((d) => '  ' + formatDiagnostic(file, d))
          .join('\n') +
        (more > 0 ? `\n  ... and ${more} more` : ''),
      { hint: `fix the lines above; the ${what} format is in README.md (${what === 'inventory' ? 'Inventory reference' : 'Playbooks'})` },
    );
  }
}
