/**
 * Bounded Avro decoding on top of avsc.
 *
 * avsc's readers trust the counts they read: an array block that claims 2^40 items makes its
 * loop run 2^40 times even after the buffer is exhausted, because reads past the end only set a
 * flag checked at the very end. Every item of every schema in schemas/ starts with a varint, so a
 * tap that refuses to read a varint past the end of the buffer bounds every loop by the message
 * size. That tap is avsc's own Tap with `readLong`/`readInt` guarded.
 */
import { createRequire } from 'node:module';

import type { Type } from 'avsc';

interface AvscTap {
  buf: Buffer;
  pos: number;
  readLong(): number;
  isValid(): boolean;
}

interface AvscReader {
  _read(tap: AvscTap): unknown;
}

type TapConstructor = new (buf: Buffer, pos?: number) => AvscTap;

// avsc does not export its Tap from the package index; utils is the same module instance avsc uses.
const { Tap } = createRequire(import.meta.url)('avsc/lib/utils') as { Tap: TapConstructor };

class BoundedTap extends Tap {
  override readLong(): number {
    if (this.pos >= this.buf.length) {
      throw new RangeError(`read past the end of the body at byte ${this.pos}`);
    }
    return super.readLong();
  }

  readInt(): number {
    return this.readLong();
  }
}

/**
 * Decodes exactly one Avro value filling `body`, with `reader` being either the type itself or a
 * resolver created by `readerType.createResolver(writerType)`. Throws a plain Error on any
 * malformation (truncation, trailing bytes, bad union or enum index, unsafe long); the codec maps
 * it to IMS_WIRE_DECODE.
 */
export function readExactly(reader: Type | object, body: Buffer): unknown {
  const tap = new BoundedTap(body);
  const value = (reader as AvscReader)._read(tap);

  if (!tap.isValid()) {
    throw new RangeError('truncated body');
  }
  if (tap.pos !== body.length) {
    throw new RangeError(`${body.length - tap.pos} trailing bytes after the value`);
  }

  return value;
}
