import type { Command } from '../context.js';
import { applyCommand } from './apply.js';
import { cacheCommand } from './cache.js';
import { createCommand } from './create.js';
import { inspectCommand } from './inspect.js';
import { manifestCommand } from './manifest.js';

/** Every `etch` subcommand, in the order `etch help` lists them. */
export const commands: readonly Command[] = [createCommand, inspectCommand, applyCommand, manifestCommand, cacheCommand];
