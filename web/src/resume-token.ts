// The resume token: the secret of this client's next session, issued in
// every Welcome. Kept in memory and in the injected storage (in the browser
// the tab's sessionStorage: it survives a reload, no other tab shares it),
// under "chat.resume" as JSON {username, token}. It is only ever offered
// for the name it was issued for.

import type { StorageLike } from "./deps";
import { sameName } from "./names";

/** Where the resume token is stored: JSON {username, token}. */
export const RESUME_STORAGE_KEY = "chat.resume";

export class ResumeToken {
  private token = "";

  constructor(private readonly storage: StorageLike | null) {}

  /** What the next Hello carries ("" for none). */
  get value(): string {
    return this.token;
  }

  /** Takes the stored token if it was issued for `username` (after a reload). */
  load(username: string): void {
    this.token = this.stored(username);
  }

  /** Remembers `token` for `username`, in memory and in storage ("" forgets it). */
  keep(token: string, username: string): void {
    this.token = token;
    try {
      if (token) this.storage?.setItem(RESUME_STORAGE_KEY, JSON.stringify({ username, token }));
      else this.storage?.removeItem(RESUME_STORAGE_KEY);
    } catch {
      /* storage full or blocked: the token still lives in memory for reconnects */
    }
  }

  private stored(username: string): string {
    let rec: unknown;
    try {
      const raw = this.storage?.getItem(RESUME_STORAGE_KEY);
      if (!raw) return "";
      rec = JSON.parse(raw);
    } catch {
      return ""; // storage blocked, or not our JSON
    }
    const { username: name, token } = (rec ?? {}) as { username?: unknown; token?: unknown };
    if (typeof name !== "string" || typeof token !== "string") return "";
    return sameName(name, username) ? token : "";
  }
}
