// Message ids have the form "<ms>-<seq>" (two unsigned decimal integers, as in
// Redis Streams) and compare as the pair (ms, seq), never as strings.

export type IdPair = readonly [bigint, bigint];

const ID_RE = /^(\d+)-(\d+)$/;

/** Parses "<ms>-<seq>"; null when malformed. */
export function parseId(id: string): IdPair | null {
  const m = ID_RE.exec(id);
  if (!m) return null;
  return [BigInt(m[1]!), BigInt(m[2]!)];
}

/**
 * Orders two message ids as the pair (ms, seq). A malformed id sorts before
 * every well-formed one (and malformed ids compare as strings among
 * themselves) so that a bad id can never break the ordering invariant.
 */
export function compareIds(a: string, b: string): number {
  if (a === b) return 0;
  const pa = parseId(a);
  const pb = parseId(b);
  if (!pa || !pb) {
    if (pa) return 1;
    if (pb) return -1;
    return a < b ? -1 : 1;
  }
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  return 0;
}

/** The greater of two ids ("" is less than everything). */
export function maxId(a: string, b: string): string {
  if (!a) return b;
  if (!b) return a;
  return compareIds(a, b) >= 0 ? a : b;
}
