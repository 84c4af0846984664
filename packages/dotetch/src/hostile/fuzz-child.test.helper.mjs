// The fuzz run's child: reads mutations of a valid .etch with readEtch, as `etch inspect` does, and prints
// one JSON line per input. Runs in its own process so a hang or a native abort cannot take the runner down.
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { readEtch } from '@etch/tar';
import { isEtchError } from '@etch/format';

const [seedText, runsText, validPath] = process.argv.slice(2);
const valid = await readFile(validPath);
let state = Number(seedText) >>> 0 || 1;
const random = () => {
  // xorshift32: small, fast, and the same sequence for the same seed everywhere.
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state / 2 ** 32;
};
const pick = (n) => Math.floor(random() * n);

function mutate(input) {
  const out = Buffer.from(input);
  const edits = 1 + pick(8);
  for (let e = 0; e < edits; e++) {
    // Mostly hit header blocks, where the parser decides things; sometimes anywhere.
    const block = pick(Math.ceil(out.length / 512));
    const at = random() < 0.8 ? block * 512 + pick(512) : pick(out.length);
    const kind = pick(4);
    if (kind === 0) out[at] = pick(256);
    else if (kind === 1) out[at] = out[at] ^ (1 << pick(8));
    else if (kind === 2) out.write(['0.5', '-1', '1e9', '0x7', '77777777777', '\0', ' '][pick(7)], at, 'latin1');
    else out.fill(pick(2) ? 0xff : 0x00, at, Math.min(out.length, at + pick(16)));
  }
  return random() < 0.1 ? out.subarray(0, pick(out.length)) : out;
}

for (let i = 0; i < Number(runsText); i++) {
  const input = mutate(valid);
  const started = Date.now();
  let outcome = 'ok';
  try {
    for await (const entry of readEtch(Readable.from([input]))) {
      if ('stream' in entry && entry.stream) for await (const chunk of entry.stream) void chunk;
    }
  } catch (error) {
    outcome = isEtchError(error) ? error.code : `untyped: ${error?.stack ?? error}`;
  }
  process.stdout.write(`${JSON.stringify({ i, outcome, ms: Date.now() - started })}\n`);
}
