import { pack, type Pack } from 'tar-stream';

/**
 * The tar stream entries are written into: a tar-stream `pack`, a readable stream of the archive's bytes.
 * Pipe it to the output, write entries with {@link promisePacker}, end it with `finalize()` once
 * {@link whenPackerIdle} resolves. Named here so that packages above `@etch/tar` never import tar-stream.
 */
export type TarPack = Pack;

/**
 * A new, empty tar stream for {@link promisePacker}.
 * @example
 * ```ts
 * const tarball = createTarPack();
 * tarball.pipe(fs.createWriteStream('out.tar'));
 * await promisePacker(tarball)({ name: 'hello.txt' }, 'hello\n');
 * await whenPackerIdle(tarball);
 * tarball.finalize();
 * ```
 */
export function createTarPack(): TarPack {
  return pack();
}
