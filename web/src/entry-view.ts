// The entry screen: a name, a room (typed, picked from the active rooms the
// gateway lists, or given in the URL fragment), and the Join button. It
// checks what it can before asking the session, and shows the session's
// refusal when there is one. User data goes in as text and attributes only.

import { byId, el } from "./dom";
import type { Locale } from "./i18n";

interface RoomInfo {
  name: string;
  members: number;
}

export interface EntryDeps {
  doc: Document;
  locale: Locale;
  /** GET /api/rooms (injected so that a test can answer it). */
  fetchRooms: () => Promise<unknown>;
  /** The person asked to join; the view waits for show() or fail(). */
  onJoin(username: string, room: string): void;
}

export class EntryView {
  private readonly root: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly username: HTMLInputElement;
  private readonly room: HTMLInputElement;
  private readonly roomOptions: HTMLDataListElement;
  private readonly roomsList: HTMLUListElement;
  private readonly roomsEmpty: HTMLElement;
  private readonly error: HTMLElement;
  private readonly joinButton: HTMLButtonElement;
  private roomsTimer: ReturnType<typeof setInterval> | null = null;
  /** Joining: the button says so until show() or fail(). */
  private busy = false;

  constructor(private readonly d: EntryDeps) {
    const doc = d.doc;
    this.root = byId(doc, "entry");
    this.form = byId<HTMLFormElement>(doc, "entry-form");
    this.username = byId<HTMLInputElement>(doc, "username");
    this.room = byId<HTMLInputElement>(doc, "room");
    this.roomOptions = byId<HTMLDataListElement>(doc, "room-options");
    this.roomsList = byId<HTMLUListElement>(doc, "rooms");
    this.roomsEmpty = byId(doc, "rooms-empty");
    this.error = byId(doc, "entry-error");
    this.joinButton = byId<HTMLButtonElement>(doc, "join");
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    d.locale.onChange(() => {
      this.relabel();
      if (!this.root.hidden) void this.refreshRooms();
    });
  }

  /** Fills in the fields (after a reload, from the fragment, or as remembered). */
  fill(username: string, room: string): void {
    this.username.value = username;
    this.room.value = room;
  }

  /** Shows the entry screen, with an error if there is one, and polls the active rooms. */
  show(error = ""): void {
    this.root.hidden = false;
    this.busy = false;
    this.relabel();
    this.joinButton.disabled = false;
    this.setError(error);
    void this.refreshRooms();
    this.stopPolling();
    this.roomsTimer = setInterval(() => void this.refreshRooms(), 5000);
    (this.username.value ? this.room : this.username).focus();
  }

  hide(): void {
    this.stopPolling();
    this.root.hidden = true;
  }

  /** Submits the form as the Join button would (a reload goes straight back in). */
  submitNow(): void {
    this.form.requestSubmit();
  }

  private stopPolling(): void {
    if (this.roomsTimer) clearInterval(this.roomsTimer);
    this.roomsTimer = null;
  }

  private relabel(): void {
    const t = this.d.locale.t;
    this.joinButton.textContent = this.busy ? t.joining : t.join;
  }

  private setError(text: string): void {
    this.error.textContent = text;
    this.error.hidden = text === "";
  }

  private submit(): void {
    if (this.busy) return;
    const t = this.d.locale.t;
    const username = this.username.value.trim();
    const room = this.room.value;
    if (!username) {
      this.setError(t.needName);
      this.username.focus();
      return;
    }
    if (!room.trim()) {
      this.setError(t.needRoom);
      this.room.focus();
      return;
    }
    if (room !== room.trim()) {
      this.setError(t.roomSpaces);
      this.room.focus();
      return;
    }
    this.setError("");
    this.busy = true;
    this.joinButton.disabled = true;
    this.relabel();
    this.d.onJoin(username, room);
  }

  private async refreshRooms(): Promise<void> {
    let rooms: RoomInfo[] = [];
    try {
      const body = (await this.d.fetchRooms()) as { rooms?: unknown } | null;
      if (!body || !Array.isArray(body.rooms)) return;
      rooms = body.rooms
        .filter((r): r is RoomInfo => typeof r?.name === "string")
        .map((r) => ({ name: r.name, members: Number(r.members) || 0 }));
    } catch {
      return;
    }
    rooms.sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
    const doc = this.d.doc;
    const t = this.d.locale.t;
    this.roomOptions.replaceChildren(
      ...rooms.map((r) => {
        const o = el(doc, "option");
        o.value = r.name;
        o.label = t.people(r.members);
        return o;
      }),
    );
    this.roomsList.replaceChildren(
      ...rooms.map((r) => {
        const li = el(doc, "li");
        const b = el(doc, "button", "room-chip");
        b.type = "button";
        b.dataset.room = r.name;
        // The count says "people" to screen readers too; the name stays what the chip shows.
        const count = el(doc, "span", "room-count", String(r.members));
        const unit = el(doc, "span", "visually-hidden", ` ${t.people(r.members).replace(/^\d+\s*/, "")}`);
        b.append(el(doc, "span", "room-name", r.name), count, unit);
        b.title = `${r.name} — ${t.people(r.members)}`;
        b.addEventListener("click", () => {
          this.room.value = r.name;
          if (this.username.value.trim()) this.form.requestSubmit();
          else this.username.focus();
        });
        li.append(b);
        return li;
      }),
    );
    this.roomsEmpty.hidden = rooms.length > 0;
  }
}
