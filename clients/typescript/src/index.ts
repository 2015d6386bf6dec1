/**
 * @readstate/client: the TypeScript client of readstate.
 *
 * - {@link ReadStateClient}: one typed method per HTTP route.
 * - {@link LiveReadStates}: one user's read states in memory, kept current from the
 *   Server-Sent Events stream (resume with `Last-Event-ID`, refetch on `resync`).
 * - {@link ReadStateError}: every error answer (RFC 9457 problem + `retryAfter`),
 *   401 `unauthorized`, 403 `forbidden` and 429 `too-many-requests` included.
 *
 * With access control on, give the client a `token` (API key or JWT, or a function
 * returning a fresh one): it is sent as `Authorization: Bearer` on every request.
 */

export { ReadStateClient } from "./client.js";
export type {
  EventsOptions,
  FetchLike,
  HeadersOption,
  ReadStateClientOptions,
  RequestOptions,
  TokenOption,
} from "./client.js";
export { ReadStateError, parseRetryAfter } from "./errors.js";
export { idString } from "./ids.js";
export { LiveReadStates } from "./live.js";
export type {
  BackoffOptions,
  ChangeCause,
  ChangeListener,
  LiveReadStatesOptions,
  LiveStats,
  ReadStateMap,
} from "./live.js";
export { SseParser, readSse } from "./sse.js";
export type { ReadSseOptions, SseMessage } from "./sse.js";
export type {
  AckInput,
  BatchOp,
  BatchOpKind,
  BatchResult,
  BatchResults,
  Channel,
  CreateMessageInput,
  Export,
  ExportedState,
  Groups,
  Id,
  JoinInput,
  Level,
  Position,
  Problem,
  ReadState,
  ReadStateChange,
  ReadStateChangeType,
  ReadStateEvent,
  Readers,
  ReadersQuery,
  ReadStates,
  ReadStatesQuery,
  SetChannelInput,
  SettingsInput,
  Status,
  Summaries,
  Summary,
  Threads,
  ThreadsQuery,
  UnreadInput,
} from "./types.js";
export type { components, operations, paths } from "./schema.js";
