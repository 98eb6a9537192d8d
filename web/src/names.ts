// Name identity, exactly as the server's (chat-proto `normalize_username`):
// trim Unicode White_Space, NFC, lowercase, NFC. Two spellings with the
// same key are one person ("Ana", " ana", "ANA"). The one place the web
// client computes it; test vectors shared with chat-proto's Rust test.

const EDGE_SPACE = /^\p{White_Space}+|\p{White_Space}+$/gu;

/**
 * The shown form of a name: surrounding White_Space trimmed (Unicode's
 * property, as Rust's `str::trim`; JavaScript's `trim` differs on U+FEFF
 * and U+0085), then NFC.
 */
export function displayName(name: string): string {
  return name.replace(EDGE_SPACE, "").normalize("NFC");
}

/** The identity of a name: displayName, lowercased, NFC again. */
export function nameKey(name: string): string {
  return displayName(name).toLowerCase().normalize("NFC");
}

/** Whether two names are the same person. */
export function sameName(a: string, b: string): boolean {
  return nameKey(a) === nameKey(b);
}
