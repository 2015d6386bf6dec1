/**
 * The public types of the client: the answers of the API (taken from the generated
 * `schema.ts`, so they follow /openapi.json) and the inputs of the client methods
 * (ids widened to `string | bigint | number`; compile-time checks below keep their
 * fields equal to the schema's).
 */

import type { components, operations } from "./schema.js";

type Schemas = components["schemas"];

/** JSON body of a 200 answer of an operation. */
type JsonOk<Op extends keyof operations> = operations[Op]["responses"] extends {
  200: { content: { "application/json": infer Body } };
}
  ? Body
  : never;

/** JSON request body of an operation (`never` when it takes none). */
type JsonBody<Op extends keyof operations> = operations[Op] extends {
  requestBody?: { content: { "application/json": infer Body } };
}
  ? NonNullable<Body>
  : never;

/**
 * An id (user, channel or message): 1..=2^63-1. Sent as a decimal string; a
 * `number` must be a safe integer (ids above 2^53 need a `string` or `bigint`).
 */
export type Id = string | bigint | number;

/** A read position: 0 (nothing read) or a message id. */
export type Position = Id;

/** One user's read state in one channel; ids are decimal strings. */
export type ReadState = Schemas["ReadState"];
/** `{ read_states: ReadState[] }`, sorted by channel id. */
export type ReadStates = JsonOk<"get_read_states">;
/** `{ unread_channels, unread_threads, mentions }` of one user (or of one group). */
export type Summary = JsonOk<"get_summary">;
/** `{ groups: { "<group_id>": Summary } }`: one summary per group of the user. */
export type Groups = JsonOk<"get_groups">;
/** `{ unread_threads, mentions, read_states, next }`: a user's threads under a channel. */
export type Threads = JsonOk<"get_threads">;
/** `{ channel_id, parent_id, group_id, last_message_id }`: what a channel belongs to. */
export type Channel = JsonOk<"get_channel">;
/** `{ user_id, read_states: ExportedState[] }`: everything stored about a user. */
export type Export = JsonOk<"export_user">;
/** One read state as stored (position, unread epoch, mention ids, settings). */
export type ExportedState = Schemas["ExportedState"];
/** A notification level. */
export type Level = "all" | "mentions" | "nothing";
/** `{ summaries: { "<user_id>": Summary } }`. */
export type Summaries = JsonOk<"post_summaries">;
/** One page of read receipts: `{ readers: string[], next?: string | null }`. */
export type Readers = JsonOk<"get_readers">;
/** `{ status }` of `/healthz` (`ok`) and `/readyz` (`ready`). */
export type Status = JsonOk<"get_healthz">;
/** `{ results: BatchResult[] }`, one per op, in order. */
export type BatchResults = JsonOk<"post_batch">;
/** `{ ok: true }` or `{ ok: false, error: Problem }`. */
export type BatchResult = Schemas["BatchResult"];
/** An RFC 9457 problem body as readstate writes it. */
export type Problem = Schemas["Problem"];
/** The kinds of batch operation. */
export type BatchOpKind = Schemas["BatchOpKind"];

/** Body of `POST /v1/channels/{channel_id}/messages`. */
export interface CreateMessageInput {
  /** The new message. */
  message_id: Id;
  /** Its author, whose read position moves to it. */
  author_id?: Id | null;
  /** Users the message mentions. */
  mentions?: readonly Id[] | null;
}

/** Body of `PUT /v1/users/{user_id}/channels/{channel_id}` (join). */
export interface JoinInput {
  /** Where the read position starts (`0`: nothing read); absent: the channel's head. */
  last_read_message_id?: Position | null;
}

/** Body of `POST .../ack`. */
export interface AckInput {
  /** The newest message read; the position never moves backwards. */
  message_id: Id;
  /** When the ack was made, ms since the Unix epoch. */
  at?: number | null;
}

/** Body of `POST .../unread`. */
export interface UnreadInput {
  /** The first message to become unread. */
  message_id: Id;
}

/** Body of `PUT /v1/channels/{channel_id}`: both fields are replaced (absent or null: unset). */
export interface SetChannelInput {
  /** The parent channel when the channel is a thread. */
  parent_id?: Id | null;
  /** The group (guild, team, workspace, category); a thread without one is in its parent's. */
  group_id?: Id | null;
  /** When the write was made, ms since the Unix epoch: the newest wins. */
  at?: number | null;
}

/** Body of `PUT .../settings`: an absent field keeps its value. */
export interface SettingsInput {
  /** Muted until then, ms since the Unix epoch; `0`: not muted; `null`: until unmuted. */
  muted_until?: number | null;
  /** `all`, `mentions` or `nothing` (`null`: unchanged). */
  level?: Level | null;
  /** When the write was made, ms since the Unix epoch: per field, the newest wins. */
  at?: number | null;
}

/** Query of `GET /v1/users/{user_id}/channels/{channel_id}/threads`. */
export interface ThreadsQuery {
  /** The `next` of the previous page. */
  after?: Id | null;
  /** Page size, 1..=limits.max_page (server default 100). */
  limit?: number;
}

/** Query of `GET /v1/channels/{channel_id}/messages/{message_id}/readers`. */
export interface ReadersQuery {
  /** The `next` of the previous page. */
  after?: Id | null;
  /** Page size, 1..=limits.max_page (server default 100). */
  limit?: number;
}

/** Query of `GET /v1/users/{user_id}/read-states` (both filters: the listed channels in the group). */
export interface ReadStatesQuery {
  /** Only these channels (absent: all). */
  channels?: readonly Id[];
  /** Only the channels of this group (own or inherited from a thread's parent). */
  group_id?: Id | null;
}

/** One operation of `POST /v1/batch`, by kind. */
export type BatchOp =
  | { op: "message_created"; channel_id: Id; message_id: Id; author_id?: Id | null; mentions?: readonly Id[] | null }
  | { op: "message_deleted"; channel_id: Id; message_id: Id }
  | { op: "join"; user_id: Id; channel_id: Id; last_read_message_id?: Position | null }
  | { op: "ack"; user_id: Id; channel_id: Id; message_id: Id; at?: number | null }
  | { op: "ack_all"; user_id: Id }
  | { op: "unread"; user_id: Id; channel_id: Id; message_id: Id }
  | { op: "leave"; user_id: Id; channel_id: Id }
  | { op: "delete_channel"; channel_id: Id }
  | { op: "set_channel"; channel_id: Id; parent_id?: Id | null; group_id?: Id | null; at?: number | null }
  | {
      op: "settings";
      user_id: Id;
      channel_id: Id;
      /** `null`: muted until unmuted; absent: unchanged. */
      muted_until?: number | null;
      level?: Level | null;
      at?: number | null;
    }
  | { op: "delete_user"; user_id: Id };

/** The `type` of a `read_state` event. */
export type ReadStateChangeType =
  | "ack"
  | "mention"
  | "unread"
  | "join"
  | "leave"
  | "message_deleted"
  | "channel_deleted"
  | "settings"
  | "user_deleted";

/** Data of a `read_state` event: the read state as it is when the event is sent. */
export interface ReadStateChange {
  type: ReadStateChangeType;
  user_id: string;
  channel_id: string;
  /** `null` once the read state is gone (leave, channel or user deleted). */
  read_state: ReadState | null;
}

/** An event of `GET /v1/users/{user_id}/events`. Unknown event names are skipped. */
export type ReadStateEvent =
  | { event: "ready"; id: string; data: { user_id: string } }
  | { event: "resync"; id: string; data: { user_id: string } }
  | { event: "read_state"; id: string; data: ReadStateChange };

// ---------------------------------------------------------------------------
// Compile-time checks: the inputs above have exactly the fields of the schema's
// request bodies, so a change of /openapi.json that adds, renames or removes a
// field breaks the build after `npm run gen:types`.

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
type AllKeys<T> = T extends unknown ? keyof T : never;

/** @internal */
export type _CheckCreateMessage = Assert<Equal<keyof CreateMessageInput, keyof JsonBody<"create_message">>>;
/** @internal */
export type _CheckJoin = Assert<Equal<keyof JoinInput, keyof Schemas["JoinRequest"]>>;
/** @internal */
export type _CheckAck = Assert<Equal<keyof AckInput, keyof JsonBody<"ack_channel">>>;
/** @internal */
export type _CheckUnread = Assert<Equal<keyof UnreadInput, keyof JsonBody<"unread_channel">>>;
/** @internal */
export type _CheckReaders = Assert<
  Equal<keyof ReadersQuery, keyof NonNullable<operations["get_readers"]["parameters"]["query"]>>
>;
/** @internal */
export type _CheckReadStates = Assert<
  Equal<keyof ReadStatesQuery, keyof NonNullable<operations["get_read_states"]["parameters"]["query"]>>
>;
/** @internal */
export type _CheckSetChannel = Assert<Equal<keyof SetChannelInput, keyof JsonBody<"set_channel">>>;
/** @internal */
export type _CheckSettings = Assert<Equal<keyof SettingsInput, keyof JsonBody<"put_settings">>>;
/** @internal */
export type _CheckLevel = Assert<Equal<Level, Exclude<JsonBody<"put_settings">["level"], null | undefined>>>;
/** @internal */
export type _CheckThreads = Assert<
  Equal<keyof ThreadsQuery, keyof NonNullable<operations["get_threads"]["parameters"]["query"]>>
>;
/** @internal */
export type _CheckSummary = Assert<
  Equal<"group_id", keyof NonNullable<operations["get_summary"]["parameters"]["query"]>>
>;
/** @internal */
export type _CheckBatchKinds = Assert<Equal<BatchOp["op"], BatchOpKind>>;
/** @internal */
export type _CheckBatchFields = Assert<Equal<AllKeys<BatchOp>, keyof Schemas["BatchOp"]>>;
/** @internal */
export type _CheckSummaries = Assert<Equal<keyof JsonBody<"post_summaries">, "user_ids">>;
