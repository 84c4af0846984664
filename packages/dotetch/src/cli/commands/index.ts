import type { Command } from '../context.js';

/** A subcommand as `etch help` lists it; its module (and what it imports) loads only when it runs. */
export interface CommandEntry {
  name: string;
  /** One line for `etch help`. */
  summary: string;
  load(): Promise<Command>;
}

/** Every `etch` subcommand, in the order `etch help` lists them. Loaded lazily: `etch create` never loads the flasher. */
export const commands: readonly CommandEntry[] = [
  {
    name: 'create',
    summary: 'write a .etch from a base image, files to inject and images to preload',
    load: async () => (await import('./create.js')).createCommand,
  },
  {
    name: 'inspect',
    summary: 'validate a .etch and show what it holds',
    load: async () => (await import('./inspect.js')).inspectCommand,
  },
  {
    name: 'apply',
    summary: 'write a .etch onto a disk image or a drive (flash it)',
    load: async () => (await import('./apply.js')).applyCommand,
  },
  {
    name: 'manifest',
    summary: 'resolve an image for a platform and print its verified manifest',
    load: async () => (await import('./manifest.js')).manifestCommand,
  },
  {
    name: 'build',
    summary: 'build an image from a base and local files, without docker, and push it',
    load: async () => (await import('./build.js')).buildCommand,
  },
  {
    name: 'copy',
    summary: 'copy an image between registries and OCI layouts, an index whole with its digest',
    load: async () => (await import('./copy.js')).copyCommand,
  },
  {
    name: 'push',
    summary: 'push an image (oci:, docker-archive: or a registry) to a registry; same as copy',
    load: async () => (await import('./copy.js')).pushCommand,
  },
  {
    name: 'eci',
    summary: 'push an ECI (disk images, kernel, initrd) to a registry, or pull one into a directory',
    load: async () => (await import('./eci.js')).eciCommand,
  },
  {
    name: 'serve',
    summary: 'stream .etch files over HTTP to many clients, byte-identical to create',
    load: async () => (await import('./serve.js')).serveCommand,
  },
  {
    name: 'cache',
    summary: 'list or clean the cache of base images and layers',
    load: async () => (await import('./cache.js')).cacheCommand,
  },
];
