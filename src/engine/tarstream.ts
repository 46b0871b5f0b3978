/** An in-memory tar archive of files named 0, 1, 2...: every upload to a host as one stream. */
import { gzipSync } from 'node:zlib';
import { Header } from 'tar';

export function tarOf(contents: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  contents.forEach((content, i) => {
    const h = new Header({ path: String(i), mode: 0o600, size: content.length, mtime: new Date(0), type: 'File' });
    h.encode();
    parts.push(h.block!, content, Buffer.alloc((512 - (content.length % 512)) % 512));
  });
  parts.push(Buffer.alloc(1024)); // end of archive
  return Buffer.concat(parts);
}

// Most hosts of a run get the same files: compress each distinct set once.
const gzipped = new Map<string, Buffer>();

/** The same archive, gzip-compressed (fast level: the network, not the CPU, is what it saves). Files come with their sha256. */
export function tarGzOf(files: { content: Buffer; sha256: string }[]): Buffer {
  const key = files.map((f) => f.sha256).join(',');
  let gz = gzipped.get(key);
  if (!gz) {
    gz = gzipSync(tarOf(files.map((f) => f.content)), { level: 1 });
    if (gzipped.size > 16) gzipped.clear();
    gzipped.set(key, gz);
  }
  return gz;
}
