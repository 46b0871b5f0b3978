/** An in-memory tar archive of files named 0, 1, 2...: every upload to a host as one stream. */
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
