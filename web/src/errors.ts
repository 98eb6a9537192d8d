import { ErrorCode } from "../gen/chat/v1/chat_pb";

/** Words for people; the client branches on the code, never on the text. */
export function describeError(code: ErrorCode, serverMessage = ""): string {
  switch (code) {
    case ErrorCode.USERNAME_TAKEN:
      return "That name is taken. Please choose another one.";
    case ErrorCode.INVALID_USERNAME:
      return "That name is not allowed. Use 1–32 characters, without control or invisible characters.";
    case ErrorCode.INVALID_ROOM:
      return "That room name is not allowed. Use 1–64 characters, without control or invisible characters and without spaces at either end.";
    case ErrorCode.TOO_MANY_ROOMS:
      return "You are in too many rooms already.";
    case ErrorCode.UNAVAILABLE:
      return "The chat service is temporarily unavailable. Please try again in a moment.";
    case ErrorCode.INTERNAL:
      return "Something went wrong on the server. Please try again.";
    case ErrorCode.INVALID_TOKEN:
      return "Your sign-in has expired or is invalid.";
    case ErrorCode.KICKED:
      return "You were removed from the chat by an operator.";
    case ErrorCode.SESSION_REPLACED:
      return "This chat continued in another tab or window.";
    case ErrorCode.RATE_LIMITED:
      return "You are sending messages too quickly; retrying shortly.";
    case ErrorCode.MESSAGE_TOO_LARGE:
      return "That message is too long.";
    case ErrorCode.EMPTY_MESSAGE:
      return "Cannot send an empty message.";
    case ErrorCode.NOT_IN_ROOM:
      return "You are not in this room.";
    case ErrorCode.NOT_AUTHENTICATED:
      return "Not signed in yet.";
    case ErrorCode.INVALID_ARGUMENT:
    case ErrorCode.BAD_FRAME:
    case ErrorCode.UNSPECIFIED:
    default:
      return serverMessage ? `Error: ${serverMessage}` : "Unexpected error.";
  }
}

/** Close code of a session that a newer session of the same client took over (Hello.resume_token). */
export const CLOSE_SESSION_REPLACED = 4002;

/** Why the server closed the connection for good (4001 / 4003), else null. */
export function describeFatalClose(code: number, reason: string): string | null {
  if (code === 4001) return reason ? `You were removed from the chat: ${reason}` : "You were removed from the chat by an operator.";
  if (code === 4003) return reason ? `Your sign-in is no longer valid: ${reason}` : "Your sign-in has expired or is invalid.";
  return null;
}
