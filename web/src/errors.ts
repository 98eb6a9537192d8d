// Error codes and close codes in words, from the catalogue of the chosen
// language. The client branches on the code, never on the text.

import { ErrorCode } from "../gen/chat/v1/chat_pb";
import type { Catalogue } from "./i18n";
import { en } from "./lang-en";

/** Words for people. */
export function describeError(code: ErrorCode, serverMessage = "", c: Catalogue = en): string {
  const e = c.errors;
  switch (code) {
    case ErrorCode.USERNAME_TAKEN:
      return e.usernameTaken;
    case ErrorCode.INVALID_USERNAME:
      return e.invalidUsername;
    case ErrorCode.INVALID_ROOM:
      return e.invalidRoom;
    case ErrorCode.TOO_MANY_ROOMS:
      return e.tooManyRooms;
    case ErrorCode.UNAVAILABLE:
      return e.unavailable;
    case ErrorCode.INTERNAL:
      return e.internal;
    case ErrorCode.INVALID_TOKEN:
      return e.invalidToken;
    case ErrorCode.KICKED:
      return e.kicked;
    case ErrorCode.SESSION_REPLACED:
      return e.replaced;
    case ErrorCode.RATE_LIMITED:
      return e.rateLimited;
    case ErrorCode.MESSAGE_TOO_LARGE:
      return e.messageTooLarge;
    case ErrorCode.EMPTY_MESSAGE:
      return e.emptyMessage;
    case ErrorCode.NOT_IN_ROOM:
      return e.notInRoom;
    case ErrorCode.NOT_AUTHENTICATED:
      return e.notAuthenticated;
    case ErrorCode.INVALID_ARGUMENT:
    case ErrorCode.BAD_FRAME:
    case ErrorCode.UNSPECIFIED:
    default:
      return serverMessage ? e.other(serverMessage) : e.unexpected;
  }
}

/** Close code of a session that a newer session of the same client took over (Hello.resume_token). */
export const CLOSE_SESSION_REPLACED = 4002;

/** Why the server closed the connection for good (4001 / 4003), else null. */
export function describeFatalClose(code: number, reason: string, c: Catalogue = en): string | null {
  if (code === 4001) return reason ? c.errors.kickedBecause(reason) : c.errors.kicked;
  if (code === 4003) return reason ? c.errors.tokenInvalidBecause(reason) : c.errors.invalidToken;
  return null;
}
