import { bytesEqual } from '../../lib/bytes/hex.ts';
import type { HashAlg } from '../../lib/hash.ts';
import type { ImaRecord } from '../../lib/ima/record.ts';
import { type ExtendScheme, PcrReplay } from '../../lib/ima/replay.ts';
import type { PcrValues } from '../../lib/pcr.ts';
import { computePcrDigest } from '../../lib/tpm/pcr-digest.ts';
import type { PcrSelection } from '../../lib/tpm/pcr-selection.ts';

/** Running PCR values computed from the log (the agent's own replay, one extend scheme). */
export interface PcrTracker {
  extend(rec: ImaRecord): void;
  /** Current value of one PCR in one bank; undefined for a bank the tracker does not replay. */
  value(bank: HashAlg, pcr: number): Uint8Array | undefined;
}

/** How many past replay states are kept to match a quote that lags the log (DOMAIN §6 row 1). */
export const DEFAULT_MATCH_WINDOW = 256;

/** The quote covers records [0, seq); `pcrs` are the replayed values of its selection there. */
export interface SeqMatch {
  seq: number;
  pcrs: PcrValues;
}

/**
 * Works out which prefix of the log a quote covers. Every record read is extended into the
 * tracker, and the selected PCR values after each record are kept for the last `window` records;
 * a quote's pcrDigest is then compared with the digest of each kept state. The log is read before
 * the quote and the kernel appends a record before extending it, so the quote may be behind or
 * ahead of what was read: {@link match} looks at both sides.
 *
 * A match proves nothing by itself (the log is the host's claim); it only tells the pipeline
 * which checkpoint to compare the verified quote with.
 */
export class SeqMatcher {
  readonly selection: PcrSelection;
  readonly hashAlg: HashAlg;
  private readonly tracker: PcrTracker;
  private readonly window: number;
  /** states[i] = selected values after `base + i` records. */
  private states: PcrValues[] = [];
  private base: number;

  /** `startCount` = records already in `tracker` (a restarted agent rebuilds it from its archive). */
  constructor(
    tracker: PcrTracker,
    selection: PcrSelection,
    hashAlg: HashAlg,
    startCount = 0,
    window = DEFAULT_MATCH_WINDOW,
  ) {
    this.tracker = tracker;
    this.selection = selection;
    this.hashAlg = hashAlg;
    this.window = window;
    this.base = startCount;
    this.states.push(this.snapshot());
  }

  /** Records extended so far. */
  get count(): number {
    return this.base + this.states.length - 1;
  }

  add(rec: ImaRecord): void {
    this.tracker.extend(rec);
    this.states.push(this.snapshot());
    if (this.states.length > this.window + 1) {
      this.states.shift();
      this.base++;
    }
  }

  /**
   * The count of records whose replay gives `pcrDigest`, searching from `hint` (the records read
   * before the quote) forward to the latest record, then backward through the kept window.
   */
  match(pcrDigest: Uint8Array, hint: number): SeqMatch | undefined {
    const from = Math.max(this.base, Math.min(hint, this.count));
    for (let seq = from; seq <= this.count; seq++) {
      if (this.matchesAt(seq, pcrDigest)) return { seq, pcrs: this.stateAt(seq) };
    }
    for (let seq = from - 1; seq >= this.base; seq--) {
      if (this.matchesAt(seq, pcrDigest)) return { seq, pcrs: this.stateAt(seq) };
    }

    return undefined;
  }

  /** Selected values after `seq` records, if still in the window. */
  valuesAt(seq: number): PcrValues | undefined {
    return seq < this.base || seq > this.count ? undefined : this.stateAt(seq);
  }

  private matchesAt(seq: number, pcrDigest: Uint8Array): boolean {
    const digest = computePcrDigest(this.selection, this.stateAt(seq), this.hashAlg);

    return digest instanceof Uint8Array && bytesEqual(digest, pcrDigest);
  }

  private stateAt(seq: number): PcrValues {
    return this.states[seq - this.base] as PcrValues;
  }

  private snapshot(): PcrValues {
    const out: PcrValues = new Map();
    for (const { bank, pcrs } of this.selection) {
      if (typeof bank === 'number') continue;
      const values = new Map<number, Uint8Array>();
      for (const pcr of pcrs) {
        const v = this.tracker.value(bank, pcr);
        if (v !== undefined) values.set(pcr, v.slice());
      }
      out.set(bank, values);
    }

    return out;
  }
}

/**
 * The kernel's extend rule (DOMAIN.md §2) for the banks the agent quotes, through the shared
 * {@link PcrReplay}: what the TPM must hold if the log is complete and the host's kernel uses
 * `scheme`.
 */
export class BankTracker implements PcrTracker {
  private readonly replay: PcrReplay;
  private readonly scheme: ExtendScheme;

  constructor(banks: readonly HashAlg[], scheme: ExtendScheme = 'perbank') {
    this.replay = new PcrReplay({ banks, schemes: [scheme] });
    this.scheme = scheme;
  }

  extend(rec: ImaRecord): void {
    this.replay.extend(rec);
  }

  value(bank: HashAlg, pcr: number): Uint8Array | undefined {
    return this.replay.banks.includes(bank) ? this.replay.value(this.scheme, bank, pcr) : undefined;
  }
}
