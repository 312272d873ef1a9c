import { hash as oneShotHash } from 'node:crypto';
import { bytesEqual, toHex } from '../bytes/hex.ts';
import { ImastreamError } from '../errors.ts';
import { canHash, DEFAULT_BANKS, digestSize, type HashAlg, isHashAlg } from '../hash.ts';
import type { PcrBank, PcrValues } from '../pcr.ts';
import {
  LEGACY_HASHED_SIZE,
  legacyHashInput,
  padDigest,
  templateDigestOf,
  violationDigest,
} from './digest.ts';
import { type ImaRecord, isViolation, LEGACY_DIGEST_SIZE, LEGACY_IMA } from './record.ts';
import { parseReplayState } from './replay-state.ts';

export { templateDigestOf } from './digest.ts';

/**
 * How the kernel chose each bank's extend digest (DOMAIN.md §2.1–2.2):
 * `perbank` (≥ 5.8): H_bank(template data); `padded` (4.11–5.7, and banks the kernel cannot
 * hash): the SHA-1 template digest zero-padded to the bank size. For SHA-1 both are the same.
 */
export type ExtendScheme = 'perbank' | 'padded';

export const EXTEND_SCHEMES: readonly ExtendScheme[] = ['perbank', 'padded'];

/** JSON-safe replay state; the streaming replayer keeps it in Redis and shards embed it. */
export interface ReplayState {
  banks: HashAlg[];
  schemes: ExtendScheme[];
  /** Records extended so far. */
  count: number;
  /** scheme → bank → PCR index → running value in lowercase hex; PCRs never extended are absent. */
  pcrs: Partial<Record<ExtendScheme, Partial<Record<HashAlg, Record<string, string>>>>>;
}

export type ReplayInput = Pick<ImaRecord, 'pcr' | 'templateName' | 'templateData' | 'templateDigest'>;

/** Highest PCR index a replay accepts (TPM 2.0 PC client: 0–23). */
const MAX_REPLAY_PCR = 23;

/** The digest one record extends into `bank` under `scheme`. */
export function extendDigest(rec: ReplayInput, bank: HashAlg, scheme: ExtendScheme): Uint8Array {
  if (isViolation(rec)) return violationDigest(bank, scheme === 'padded');
  if (scheme === 'perbank' || bank === 'sha1') return templateDigestOf(rec, bank);

  return padDigest(templateDigestOf(rec, 'sha1'), bank);
}

/**
 * One running PCR chain: per PCR index a buffer `value || next digest`, so an extend is one hash
 * over the buffer with no concatenation. Padded chains only ever write the first 20 bytes of the
 * digest half, so the zero padding stays in place.
 */
interface Chain {
  bank: HashAlg;
  size: number;
  padded: boolean;
  /** Indexed by PCR (0–23); undefined for a PCR never extended. An array: looked up per record. */
  slots: (Uint8Array | undefined)[];
}

function newChain(bank: HashAlg, padded: boolean): Chain {
  return { bank, size: digestSize(bank), padded, slots: new Array(MAX_REPLAY_PCR + 1).fill(undefined) };
}

/** The PCR indexes a chain has extended, ascending. */
function extendedPcrs(chain: Chain): number[] {
  const out: number[] = [];
  for (let pcr = 0; pcr < chain.slots.length; pcr++) if (chain.slots[pcr] !== undefined) out.push(pcr);

  return out;
}

/**
 * Hashing goes through node:crypto's one-shot `hash()`, which skips the Hash object that
 * `createHash` builds per call. The digest comes back as a `'binary'` (latin1) string, one char
 * per byte, copied into a reused array: on Node 20 the `'buffer'` output allocates a Buffer per
 * call, which costs about twice the hash of a 40- to 64-byte extend input (measured 2.3 µs
 * against 0.7 µs a call). The primitive itself is never ours to write.
 */
function digestInto(alg: HashAlg, input: Uint8Array, out: Uint8Array): void {
  const bytes = oneShotHash(alg, input, 'binary');
  for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
}

/**
 * PCR replay of an IMA log, record by record, in several banks and both extend schemes at once
 * (like evmctl, DOMAIN.md §2.6), until a quote tells which scheme the host uses (pin()).
 *
 * The values are what the log claims the TPM holds; they prove nothing until a verified quote
 * matches them.
 */
export class PcrReplay {
  private readonly bankList: HashAlg[];
  private schemeList: ExtendScheme[];
  /** Keyed `scheme:bank`; `padded:sha1` is the same chain as `perbank:sha1` when both exist. */
  private chains = new Map<string, Chain>();
  private order: Chain[] = [];
  /** scheme → bank → chain, for lookups without building a key string. */
  private lookup: Record<ExtendScheme, Map<HashAlg, Chain>> = { perbank: new Map(), padded: new Map() };
  /** The algorithms the template data is hashed in, one reused output array each. */
  private algs: HashAlg[] = [];
  private digests: Uint8Array[] = [];
  /** Per chain in `order`: the index in `digests` of the digest it extends. */
  private digestOf: number[] = [];
  /** Whether `digests` holds the last record's template digests (not after a violation). */
  private hashed = false;
  private n = 0;
  private readonly legacyScratch = new Uint8Array(LEGACY_HASHED_SIZE);

  constructor(opts: { banks?: readonly HashAlg[]; schemes?: readonly ExtendScheme[] } = {}) {
    this.bankList = checkBanks(opts.banks ?? DEFAULT_BANKS);
    this.schemeList = checkSchemes(opts.schemes ?? EXTEND_SCHEMES);
    // perbank first, so that padded SHA-1 can share its chain.
    for (const scheme of EXTEND_SCHEMES.filter((s) => this.schemeList.includes(s))) {
      for (const bank of this.bankList) this.chains.set(`${scheme}:${bank}`, this.chainFor(scheme, bank));
    }
    this.refresh();
  }

  /** The distinct chains to extend and the digests they need, recomputed when chains change. */
  private refresh(): void {
    this.order = [...new Set(this.chains.values())];
    this.lookup = { perbank: new Map(), padded: new Map() };
    for (const [key, chain] of this.chains) {
      const [scheme, bank] = key.split(':') as [ExtendScheme, HashAlg];
      this.lookup[scheme].set(bank, chain);
    }
    const needs = this.order.map((c) => (c.padded ? 'sha1' : c.bank));
    // pin() only ever drops algorithms: the last record's digests stay readable for those kept.
    const kept = new Map(this.algs.map((alg, i) => [alg, this.digests[i]!]));
    this.algs = [...new Set(needs)];
    this.digests = this.algs.map((alg) => kept.get(alg) ?? new Uint8Array(digestSize(alg)));
    this.digestOf = needs.map((alg) => this.algs.indexOf(alg));
  }

  private chainFor(scheme: ExtendScheme, bank: HashAlg): Chain {
    const shared = scheme === 'padded' && bank === 'sha1' ? this.chains.get('perbank:sha1') : undefined;
    return shared ?? newChain(bank, scheme === 'padded' && bank !== 'sha1');
  }

  /** Rebuilds a replay from stored state; the state is validated as hostile input. */
  static fromState(state: unknown): PcrReplay {
    const s = parseReplayState(state);
    const replay = new PcrReplay({ banks: s.banks, schemes: s.schemes });
    replay.n = s.count;
    for (const scheme of EXTEND_SCHEMES.filter((x) => s.schemes.includes(x))) {
      for (const bank of s.banks) {
        const values = s.pcrs[scheme]?.[bank] ?? {};
        replay.restoreChain(scheme, bank, values);
      }
    }
    replay.refresh();

    return replay;
  }

  private restoreChain(scheme: ExtendScheme, bank: HashAlg, values: Record<string, Uint8Array>): void {
    let chain = this.chains.get(`${scheme}:${bank}`)!;
    if (scheme === 'padded' && chain === this.chains.get(`perbank:${bank}`)) {
      // A shared SHA-1 chain is restored once; split it only if the stored values disagree.
      if (sameValues(chain, values)) return;
      chain = newChain(bank, false);
      this.chains.set(`${scheme}:${bank}`, chain);
    }
    for (const [pcr, value] of Object.entries(values)) {
      const buf = new Uint8Array(2 * chain.size);
      buf.set(value, 0);
      chain.slots[Number(pcr)] = buf;
    }
  }

  get count(): number {
    return this.n;
  }

  get banks(): readonly HashAlg[] {
    return this.bankList;
  }

  get schemes(): readonly ExtendScheme[] {
    return this.schemeList;
  }

  /** Extends every tracked chain with one record. Hashes the template data once per bank. */
  extend(rec: ReplayInput): void {
    const pcr = rec.pcr;
    if (!Number.isInteger(pcr) || pcr < 0 || pcr > MAX_REPLAY_PCR) {
      throw new ImastreamError('IMS_IMA_BAD_PCR', `PCR index ${pcr} out of range`, { details: { pcr } });
    }
    const violation = isViolation(rec);
    this.hashed = !violation;
    if (!violation) this.hashRecord(rec);
    for (let i = 0; i < this.order.length; i++) {
      const chain = this.order[i]!;
      const slot = chain.slots[pcr] ?? this.newSlot(chain, pcr);
      if (violation) {
        slot.fill(0xff, chain.size, chain.size + (chain.padded ? LEGACY_DIGEST_SIZE : chain.size));
      } else {
        slot.set(this.digests[this.digestOf[i]!]!, chain.size);
      }
      digestInto(chain.bank, slot, slot);
    }
    this.n++;
  }

  /** Computes the template digest once for every bank any chain needs. */
  private hashRecord(rec: ReplayInput): void {
    const input =
      rec.templateName === LEGACY_IMA
        ? legacyHashInput(rec.templateData, this.legacyScratch)
        : rec.templateData;
    for (let i = 0; i < this.algs.length; i++) digestInto(this.algs[i]!, input, this.digests[i]!);
  }

  private newSlot(chain: Chain, pcr: number): Uint8Array {
    const slot = new Uint8Array(2 * chain.size);
    chain.slots[pcr] = slot;

    return slot;
  }

  /**
   * The template digest `H_alg(data)` computed for the last record, for checking the logged
   * digest without hashing twice; undefined after a violation or for a bank not hashed.
   * The array is reused by the next extend(): read it before then, or copy it.
   */
  lastTemplateDigest(alg: HashAlg): Uint8Array | undefined {
    return this.hashed ? this.digests[this.algs.indexOf(alg)] : undefined;
  }

  private chain(scheme: ExtendScheme, bank: HashAlg): Chain {
    const chain = this.lookup[scheme]?.get(bank);
    if (chain === undefined) throw new RangeError(`replay does not track ${scheme} ${bank}`);

    return chain;
  }

  /** The running value of one PCR (a copy); zeros if the log never extended it. */
  value(scheme: ExtendScheme, bank: HashAlg, pcr: number): Uint8Array {
    const chain = this.chain(scheme, bank);
    const slot = chain.slots[pcr];

    return slot === undefined ? new Uint8Array(chain.size) : slot.slice(0, chain.size);
  }

  /** Whether one PCR's running value equals `expected`, without copying. */
  equals(scheme: ExtendScheme, bank: HashAlg, pcr: number, expected: Uint8Array): boolean {
    const chain = this.chain(scheme, bank);
    const slot = chain.slots[pcr];
    if (expected.length !== chain.size) return false;
    if (slot === undefined) return expected.every((b) => b === 0);
    for (let i = 0; i < chain.size; i++) if (slot[i] !== expected[i]) return false;

    return true;
  }

  /** Every PCR the log extended, in every bank, under one scheme (copies). */
  values(scheme: ExtendScheme): PcrValues {
    const out: PcrValues = new Map();
    for (const bank of this.bankList) {
      const chain = this.chain(scheme, bank);
      const values: PcrBank = new Map();
      for (const pcr of extendedPcrs(chain)) values.set(pcr, this.value(scheme, bank, pcr));
      out.set(bank, values);
    }

    return out;
  }

  /** Keeps only `scheme` once a quote has shown which one the host uses. */
  pin(scheme: ExtendScheme): void {
    if (!this.schemeList.includes(scheme)) throw new RangeError(`replay does not track ${scheme}`);
    this.schemeList = [scheme];
    for (const key of [...this.chains.keys()]) if (!key.startsWith(`${scheme}:`)) this.chains.delete(key);
    this.refresh();
  }

  state(): ReplayState {
    const pcrs: ReplayState['pcrs'] = {};
    for (const scheme of this.schemeList) {
      const banks: Partial<Record<HashAlg, Record<string, string>>> = {};
      for (const bank of this.bankList) {
        const chain = this.chain(scheme, bank);
        const values: Record<string, string> = {};
        for (const pcr of extendedPcrs(chain)) {
          values[String(pcr)] = toHex(chain.slots[pcr]!.subarray(0, chain.size));
        }
        banks[bank] = values;
      }
      pcrs[scheme] = banks;
    }

    return { banks: [...this.bankList], schemes: [...this.schemeList], count: this.n, pcrs };
  }

  clone(): PcrReplay {
    const copy = new PcrReplay({ banks: this.bankList, schemes: this.schemeList });
    copy.n = this.n;
    const copies = new Map<Chain, Chain>();
    for (const [key, chain] of this.chains) {
      let c = copies.get(chain);
      if (c === undefined) {
        c = { ...chain, slots: chain.slots.map((slot) => slot?.slice()) };
        copies.set(chain, c);
      }
      copy.chains.set(key, c);
    }
    copy.refresh();

    return copy;
  }
}

function sameValues(chain: Chain, values: Record<string, Uint8Array>): boolean {
  const keys = Object.keys(values);
  if (keys.length !== extendedPcrs(chain).length) return false;

  return keys.every((k) => {
    const slot = chain.slots[Number(k)];
    return slot !== undefined && bytesEqual(slot.subarray(0, chain.size), values[k]!);
  });
}

function checkBanks(banks: readonly unknown[]): HashAlg[] {
  const ok =
    banks.length > 0 &&
    new Set(banks).size === banks.length &&
    banks.every((b) => typeof b === 'string' && isHashAlg(b) && canHash(b));
  if (!ok) throw new ImastreamError('IMS_IMA_UNSUPPORTED_ALG', `banks must be distinct hashable algorithms`);

  return [...(banks as HashAlg[])];
}

function checkSchemes(schemes: readonly unknown[]): ExtendScheme[] {
  const ok = schemes.length > 0 && new Set(schemes).size === schemes.length;
  if (!ok || !schemes.every((s) => s === 'perbank' || s === 'padded')) {
    throw new ImastreamError('IMS_REPLAY_BAD_STATE', 'schemes must be distinct, of perbank and padded');
  }

  return [...(schemes as ExtendScheme[])];
}
