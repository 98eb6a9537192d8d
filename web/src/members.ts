// The room's member list as the session knows it: sorted as people read
// names (presence.ts `compareNames`), each name once, kept up to date by
// presence pushes with a binary search per event.

import { compareNames, withMember, withoutMember } from "./presence";

export class Members {
  private list: string[] = [];

  get names(): readonly string[] {
    return this.list;
  }

  /** The full list from a Joined. */
  reset(names: readonly string[]): readonly string[] {
    this.list = [...names].sort(compareNames);
    return this.list;
  }

  joined(name: string): readonly string[] {
    this.list = withMember(this.list, name);
    return this.list;
  }

  left(name: string): readonly string[] {
    this.list = withoutMember(this.list, name);
    return this.list;
  }
}
