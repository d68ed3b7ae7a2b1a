/**
 * The benchmark's baseline client, run as its own process as `tre upload` is: uploads every
 * file below a folder to a plain tus server, `jobs` at a time, with tus-js-client. Not part of
 * the product.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Upload } from 'tus-js-client';

const [endpoint, src, jobsArg, chunkArg] = process.argv.slice(2);
if (!endpoint || !src || !jobsArg || !chunkArg) {
  throw new Error('usage: plain-tus-client <endpoint> <folder> <jobs> <chunk bytes>');
}

async function files(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...(await files(p)));
    else out.push(p);
  }
  return out;
}

const queue = await files(src);
const worker = async (): Promise<void> => {
  for (let f = queue.shift(); f; f = queue.shift()) {
    const size = (await stat(f)).size;
    const path = f;
    await new Promise<void>((resolve, reject) => {
      const up = new Upload(createReadStream(path), {
        endpoint,
        uploadSize: size,
        chunkSize: Number(chunkArg),
        uploadDataDuringCreation: true,
        storeFingerprintForResuming: false,
        metadata: { name: path },
        onSuccess: () => resolve(),
        onError: reject,
      });
      up.start();
    });
  }
};
await Promise.all(Array.from({ length: Number(jobsArg) }, worker));
