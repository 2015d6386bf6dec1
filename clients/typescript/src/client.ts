/**
 * `ReadStateClient`: one typed method per route of the readstate HTTP API.
 *
 * - Ids are accepted as `string | bigint | number` and sent as decimal strings.
 * - With access control on, `token` (an API key or a user's JWT, or a function
 *   returning a fresh one) is sent as `Authorization: Bearer <token>` on every
 *   request, the event stream included.
 * - An error answer rejects with a {@link ReadStateError} carrying the problem body
 *   and, on 429 and 503, `retryAfter` (seconds). Network failures reject with what
 *   `fetch` throws.
 * - Nothing is retried behind the caller's back. Every write of readstate is
 *   idempotent, so retrying a write that failed with 503 (outcome unknown) or a
 *   network error is safe: wait `error.retryAfter` seconds and call it again.
 * - Uses the global `fetch` (Node 20+, browsers) unless one is given.
 */

import { ReadStateError, errorFromResponse } from "./errors.js";
import { idString } from "./ids.js";
import type { components } from "./schema.js";
import { readSse } from "./sse.js";
import type {
  AckInput,
  BatchOp,
  BatchResults,
  Channel,
  CreateMessageInput,
  Export,
  Groups,
  Id,
  JoinInput,
  ReadState,
  ReadStateChange,
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

type Schemas = components["schemas"];

/** The `fetch` function the client calls. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** Headers sent with every request: fixed, or computed per request (e.g. a fresh token). */
export type HeadersOption = HeadersInit | (() => HeadersInit | Promise<HeadersInit>);

/**
 * The bearer token of every request: an API key (`rsk_...`) or a user's JWT, or a
 * function called before each request (and each reconnection of a live stream)
 * that returns it, e.g. a fresh JWT from the identity provider. A function may
 * answer `undefined` (or `""`) to send no token.
 */
export type TokenOption = string | (() => string | undefined | null | Promise<string | undefined | null>);

/** Options of {@link ReadStateClient}. */
export interface ReadStateClientOptions {
  /** Where readstate is served, e.g. `http://127.0.0.1:8080` (a path prefix is kept). */
  baseUrl: string;
  /** The `fetch` to use (default: the global one). */
  fetch?: FetchLike;
  /**
   * The credential sent as `Authorization: Bearer <token>` on every request (when
   * the server has access control on): an API key, a user's JWT, or a function
   * returning one per request. It wins over an `authorization` of `headers`; the
   * per-call `headers` win over it. Never part of an error message.
   */
  token?: TokenOption;
  /** Headers of every request, e.g. `{ "x-request-id": "..." }`. */
  headers?: HeadersOption;
}

/** Per-call options. */
export interface RequestOptions {
  /** Aborts the request. */
  signal?: AbortSignal;
  /** Extra headers of this request (they win over the client's). */
  headers?: HeadersInit;
}

/** Options of {@link ReadStateClient.events}. */
export interface EventsOptions extends RequestOptions {
  /** Resume after this event id: only the changes since then are sent (or `resync`). */
  lastEventId?: string;
  /**
   * How `lastEventId` is sent: the `Last-Event-ID` header (default) or the
   * `last_event_id` query parameter (avoids a CORS preflight in browsers).
   */
  resumeWith?: "header" | "query";
  /** Called for every chunk received, heartbeats included (a liveness signal). */
  onActivity?: () => void;
}

/** Typed client of the readstate HTTP API. */
export class ReadStateClient {
  readonly baseUrl: string;
  readonly #fetch: FetchLike;
  readonly #headers: HeadersOption | undefined;
  readonly #token: TokenOption | undefined;

  constructor(options: ReadStateClientOptions) {
    if (!options || typeof options.baseUrl !== "string" || options.baseUrl === "") {
      throw new TypeError("ReadStateClient: baseUrl is required");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    // Called through a closure: browsers' fetch must not be called with another `this`.
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#headers = options.headers;
    if (options.token !== undefined && typeof options.token !== "string" && typeof options.token !== "function") {
      throw new TypeError("ReadStateClient: token must be a string or a function returning one");
    }
    // Checked now when fixed, so that a bad one fails here and not on every call.
    if (typeof options.token === "string") bearer(options.token);
    this.#token = options.token;
  }

  // -- operations --------------------------------------------------------------

  /** `GET /healthz`: liveness, `{ status: "ok" }`. */
  async healthz(options?: RequestOptions): Promise<Status> {
    return this.#json<Status>("GET", "/healthz", { options });
  }

  /** `GET /readyz`: readiness, `{ status: "ready" }`; a 503 `ReadStateError` when not ready. */
  async readyz(options?: RequestOptions): Promise<Status> {
    return this.#json<Status>("GET", "/readyz", { options });
  }

  /** `GET /metrics`: Prometheus text exposition. */
  async metrics(options?: RequestOptions): Promise<string> {
    const res = await this.#send("GET", "/metrics", { options, accept: "text/plain" });
    return res.text();
  }

  /** `GET /openapi.json`: the OpenAPI 3.1 document the types of this package are generated from. */
  async openApi(options?: RequestOptions): Promise<Record<string, unknown>> {
    return this.#json<Record<string, unknown>>("GET", "/openapi.json", { options });
  }

  // -- channels ------------------------------------------------------------------

  /**
   * `POST /v1/channels/{channel_id}/messages`: a message was created. The author's
   * read position moves to it; each mentioned user (but the author) gets a mention.
   */
  async createMessage(channelId: Id, input: CreateMessageInput, options?: RequestOptions): Promise<void> {
    const body: Schemas["CreateMessageRequest"] = { message_id: idString(input.message_id, "message_id") };
    if (input.author_id !== undefined) body.author_id = optionalId(input.author_id, "author_id");
    if (input.mentions !== undefined) body.mentions = idList(input.mentions, "mentions");
    await this.#empty("POST", `/v1/channels/${seg(channelId, "channel_id")}/messages`, { body, options });
  }

  /** `DELETE /v1/channels/{channel_id}/messages/{message_id}`: the message stops counting. */
  async deleteMessage(channelId: Id, messageId: Id, options?: RequestOptions): Promise<void> {
    await this.#empty(
      "DELETE",
      `/v1/channels/${seg(channelId, "channel_id")}/messages/${seg(messageId, "message_id")}`,
      { options },
    );
  }

  /** `DELETE /v1/channels/{channel_id}`: removes the channel and every read state in it. */
  async deleteChannel(channelId: Id, options?: RequestOptions): Promise<void> {
    await this.#empty("DELETE", `/v1/channels/${seg(channelId, "channel_id")}`, { options });
  }

  /**
   * `PUT /v1/channels/{channel_id}`: what the channel belongs to. `parent_id` makes
   * it a thread of that channel, `group_id` puts it in a group; each write replaces
   * both (absent or null: unset), and the newest `at` wins. A parent that is the
   * channel itself or forms a cycle rejects with a 400 naming `parent_id`.
   */
  async setChannel(channelId: Id, input: SetChannelInput = {}, options?: RequestOptions): Promise<Channel> {
    const body: Schemas["SetChannelRequest"] = {};
    if (input.parent_id !== undefined) body.parent_id = optionalId(input.parent_id, "parent_id");
    if (input.group_id !== undefined) body.group_id = optionalId(input.group_id, "group_id");
    if (input.at !== undefined) body.at = input.at;
    return this.#json<Channel>("PUT", `/v1/channels/${seg(channelId, "channel_id")}`, { body, options });
  }

  /** `GET /v1/channels/{channel_id}`: the channel's parent, group and newest message; a 404 `ReadStateError` for one never seen. */
  async getChannel(channelId: Id, options?: RequestOptions): Promise<Channel> {
    return this.#json<Channel>("GET", `/v1/channels/${seg(channelId, "channel_id")}`, { options });
  }

  /**
   * `GET /v1/channels/{channel_id}/messages/{message_id}/readers`: one page of read
   * receipts (users at or past the message, by id). Pass `next` as `after` for the
   * following page; `next` is null (or absent) on the last one.
   */
  async readers(channelId: Id, messageId: Id, query: ReadersQuery = {}, options?: RequestOptions): Promise<Readers> {
    const params: Record<string, string> = {};
    if (query.after !== undefined && query.after !== null) params["after"] = idString(query.after, "after");
    if (query.limit !== undefined) params["limit"] = String(query.limit);
    return this.#json<Readers>(
      "GET",
      `/v1/channels/${seg(channelId, "channel_id")}/messages/${seg(messageId, "message_id")}/readers`,
      { query: params, options },
    );
  }

  /** Every reader of a message, following `next` page after page. */
  async *allReaders(
    channelId: Id,
    messageId: Id,
    query: { limit?: number } = {},
    options?: RequestOptions,
  ): AsyncGenerator<string, void, undefined> {
    let after: string | null | undefined;
    do {
      const page: Readers = await this.readers(channelId, messageId, { ...query, after }, options);
      yield* page.readers;
      after = page.next;
    } while (after !== null && after !== undefined);
  }

  // -- read states --------------------------------------------------------------

  /**
   * `PUT /v1/users/{user_id}/channels/{channel_id}`: join. Starts at the channel's
   * newest message, or at `last_read_message_id` (`0`: nothing read). A no-op when
   * the read state exists.
   */
  async join(userId: Id, channelId: Id, input?: JoinInput, options?: RequestOptions): Promise<ReadState> {
    let body: Schemas["JoinRequest"] | undefined;
    if (input !== undefined) {
      body = {};
      if (input.last_read_message_id !== undefined) {
        body.last_read_message_id = optionalId(input.last_read_message_id, "last_read_message_id");
      }
    }
    return this.#json<ReadState>("PUT", userChannel(userId, channelId), { body, options });
  }

  /** `GET /v1/users/{user_id}/channels/{channel_id}`: one read state; a 404 `ReadStateError` when absent. */
  async getReadState(userId: Id, channelId: Id, options?: RequestOptions): Promise<ReadState> {
    return this.#json<ReadState>("GET", userChannel(userId, channelId), { options });
  }

  /** `DELETE /v1/users/{user_id}/channels/{channel_id}`: leave (idempotent). */
  async leave(userId: Id, channelId: Id, options?: RequestOptions): Promise<void> {
    await this.#empty("DELETE", userChannel(userId, channelId), { options });
  }

  /**
   * `POST /v1/users/{user_id}/channels/{channel_id}/ack`: the read position moves
   * forward to `message_id` (never back). `at` (ms since the epoch) makes an ack
   * older than the latest mark-unread be ignored.
   */
  async ack(userId: Id, channelId: Id, input: AckInput, options?: RequestOptions): Promise<ReadState> {
    const body: Schemas["AckRequest"] = { message_id: idString(input.message_id, "message_id") };
    if (input.at !== undefined) body.at = input.at;
    return this.#json<ReadState>("POST", `${userChannel(userId, channelId)}/ack`, { body, options });
  }

  /**
   * `POST /v1/users/{user_id}/channels/{channel_id}/unread`: `message_id` and later
   * messages are unread again (the position becomes `message_id - 1`).
   */
  async markUnread(userId: Id, channelId: Id, input: UnreadInput, options?: RequestOptions): Promise<ReadState> {
    const body: Schemas["UnreadRequest"] = { message_id: idString(input.message_id, "message_id") };
    return this.#json<ReadState>("POST", `${userChannel(userId, channelId)}/unread`, { body, options });
  }

  /**
   * `PUT /v1/users/{user_id}/channels/{channel_id}/settings`: mute (`muted_until`:
   * ms since the epoch, `0` = not muted, `null` = until unmuted) and notification
   * level. An absent field keeps its value; per field, the newest `at` wins.
   * Creates the read state (at the channel's newest message) when absent.
   */
  async updateSettings(userId: Id, channelId: Id, input: SettingsInput, options?: RequestOptions): Promise<ReadState> {
    const body: Schemas["SettingsRequest"] = {};
    if (input.muted_until !== undefined) body.muted_until = input.muted_until;
    if (input.level !== undefined) body.level = input.level;
    if (input.at !== undefined) body.at = input.at;
    return this.#json<ReadState>("PUT", `${userChannel(userId, channelId)}/settings`, { body, options });
  }

  /**
   * `GET /v1/users/{user_id}/read-states?channels=&group_id=`: all read states, or
   * those of the listed channels, of one group, or both, by channel id.
   */
  async readStates(userId: Id, query: ReadStatesQuery = {}, options?: RequestOptions): Promise<ReadStates> {
    const params: Record<string, string> = {};
    if (query.channels !== undefined) {
      params["channels"] = query.channels.map((c, i) => idString(c, `channels[${i}]`)).join(",");
    }
    if (query.group_id !== undefined && query.group_id !== null) {
      params["group_id"] = idString(query.group_id, "group_id");
    }
    return this.#json<ReadStates>("GET", `/v1/users/${seg(userId, "user_id")}/read-states`, {
      query: params,
      options,
    });
  }

  /** `GET /v1/users/{user_id}/summary`: unread channels, unread threads and mention total. */
  async summary(userId: Id, options?: RequestOptions): Promise<Summary> {
    return this.#json<Summary>("GET", `/v1/users/${seg(userId, "user_id")}/summary`, { options });
  }

  /** `GET /v1/users/{user_id}/summary?group_id=`: the summary over the read states of one group. */
  async groupSummary(userId: Id, groupId: Id, options?: RequestOptions): Promise<Summary> {
    return this.#json<Summary>("GET", `/v1/users/${seg(userId, "user_id")}/summary`, {
      query: { group_id: idString(groupId, "group_id") },
      options,
    });
  }

  /** `GET /v1/users/{user_id}/groups`: the summary of each group the user has a read state in. */
  async groups(userId: Id, options?: RequestOptions): Promise<Groups> {
    return this.#json<Groups>("GET", `/v1/users/${seg(userId, "user_id")}/groups`, { options });
  }

  /**
   * `GET /v1/users/{user_id}/channels/{channel_id}/threads`: the counts over the
   * user's threads under the channel and one page of those unread or with a
   * mention. Pass `next` as `after` for the following page.
   */
  async threads(userId: Id, channelId: Id, query: ThreadsQuery = {}, options?: RequestOptions): Promise<Threads> {
    const params: Record<string, string> = {};
    if (query.after !== undefined && query.after !== null) params["after"] = idString(query.after, "after");
    if (query.limit !== undefined) params["limit"] = String(query.limit);
    return this.#json<Threads>("GET", `${userChannel(userId, channelId)}/threads`, { query: params, options });
  }

  /** `DELETE /v1/users/{user_id}`: removes every read state, mention and setting of the user (idempotent; admin scope). */
  async deleteUser(userId: Id, options?: RequestOptions): Promise<void> {
    await this.#empty("DELETE", `/v1/users/${seg(userId, "user_id")}`, { options });
  }

  /** `GET /v1/users/{user_id}/export`: everything stored about the user (admin scope). */
  async exportUser(userId: Id, options?: RequestOptions): Promise<Export> {
    return this.#json<Export>("GET", `/v1/users/${seg(userId, "user_id")}/export`, { options });
  }

  /** `POST /v1/users/{user_id}/ack-all`: every read state moves to its channel's newest message. */
  async ackAll(userId: Id, options?: RequestOptions): Promise<ReadStates> {
    return this.#json<ReadStates>("POST", `/v1/users/${seg(userId, "user_id")}/ack-all`, { options });
  }

  /** `POST /v1/summaries`: the summaries of many users, keyed by user id (decimal string). */
  async summaries(userIds: readonly Id[], options?: RequestOptions): Promise<Summaries> {
    const body: Schemas["SummariesRequest"] = { user_ids: idList(userIds, "user_ids") };
    return this.#json<Summaries>("POST", "/v1/summaries", { body, options });
  }

  /**
   * `POST /v1/batch`: write ops applied in order, one result each. A bad op fails
   * alone (`{ ok: false, error: problem }` naming `ops[i].field`) and the call itself
   * resolves; only a body that is not a batch at all rejects (400).
   */
  async batch(ops: readonly BatchOp[], options?: RequestOptions): Promise<BatchResults> {
    const body: Schemas["BatchRequest"] = { ops: ops.map((op, i) => batchOp(op, i)) };
    return this.#json<BatchResults>("POST", "/v1/batch", { body, options });
  }

  // -- live changes -------------------------------------------------------------

  /**
   * `GET /v1/users/{user_id}/events`: opens the Server-Sent Events stream of the
   * user's read-state changes. Resolves once the server answered 200 (rejects with a
   * `ReadStateError` otherwise), to the events in order: `ready` first (or `resync`
   * when `lastEventId` cannot be resumed), then `read_state` changes and occasional
   * `resync`s. The iteration ends when the server closes the stream (e.g. shutdown);
   * breaking out of it, or aborting `signal`, closes the connection.
   *
   * For a self-healing view of the read states use `LiveReadStates`.
   */
  async events(userId: Id, options: EventsOptions = {}): Promise<AsyncGenerator<ReadStateEvent, void, undefined>> {
    const query: Record<string, string> = {};
    const headers = new Headers(options.headers);
    if (options.lastEventId !== undefined) {
      if (options.resumeWith === "query") query["last_event_id"] = options.lastEventId;
      else headers.set("last-event-id", options.lastEventId);
    }
    const res = await this.#send("GET", `/v1/users/${seg(userId, "user_id")}/events`, {
      query,
      accept: "text/event-stream",
      options: { signal: options.signal, headers },
    });
    const type = res.headers.get("content-type") ?? "";
    if (!type.toLowerCase().startsWith("text/event-stream") || res.body === null) {
      await res.body?.cancel().catch(() => {});
      throw new ReadStateError({
        type: "about:blank",
        title: "Not an event stream",
        status: res.status,
        detail: `expected text/event-stream, got ${type || "no content type"}`,
      });
    }
    return typedEvents(readSse(res.body, { onActivity: options.onActivity }));
  }

  /**
   * The URL of `GET /v1/users/{user_id}/events/ws` (the same events as WebSocket
   * text messages `{event, id, data}`), for the platform's `WebSocket`.
   *
   * A `WebSocket` cannot send an `Authorization` header: with access control on,
   * pass the token as `accessToken` and it goes in the URL as `?access_token=`
   * (readstate never logs request URIs; keep the URL out of your own logs).
   */
  eventsWebSocketUrl(userId: Id, lastEventId?: string, accessToken?: string): string {
    const url = new URL(`${this.baseUrl}/v1/users/${seg(userId, "user_id")}/events/ws`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (lastEventId !== undefined) url.searchParams.set("last_event_id", lastEventId);
    if (accessToken !== undefined) url.searchParams.set("access_token", checkedToken(accessToken));
    return url.toString();
  }

  // -- plumbing -----------------------------------------------------------------

  async #json<T>(method: string, path: string, request: SendRequest): Promise<T> {
    const res = await this.#send(method, path, request);
    return (await res.json()) as T;
  }

  async #empty(method: string, path: string, request: SendRequest): Promise<void> {
    const res = await this.#send(method, path, request);
    // Drain the (empty) body so the connection is reused.
    await res.arrayBuffer();
  }

  async #send(method: string, path: string, request: SendRequest): Promise<Response> {
    let url = this.baseUrl + path;
    const query = request.query ? new URLSearchParams(request.query).toString() : "";
    if (query) url += `?${query}`;

    const headers = new Headers();
    if (this.#headers !== undefined) {
      const base = typeof this.#headers === "function" ? await this.#headers() : this.#headers;
      new Headers(base).forEach((value, key) => headers.set(key, value));
    }
    if (this.#token !== undefined) {
      const token = typeof this.#token === "function" ? await this.#token() : this.#token;
      if (token !== undefined && token !== null && token !== "") headers.set("authorization", bearer(token));
    }
    if (request.options?.headers !== undefined) {
      new Headers(request.options.headers).forEach((value, key) => headers.set(key, value));
    }
    headers.set("accept", `${request.accept ?? "application/json"}, application/problem+json`);
    const init: RequestInit = { method, headers };
    if (request.body !== undefined) {
      headers.set("content-type", "application/json");
      init.body = JSON.stringify(request.body);
    }
    if (request.options?.signal !== undefined) init.signal = request.options.signal;
    if (request.accept === "text/event-stream") init.cache = "no-store";

    const res = await this.#fetch(url, init);
    if (!res.ok) throw await errorFromResponse(res);
    return res;
  }
}

interface SendRequest {
  query?: Record<string, string>;
  body?: unknown;
  accept?: string;
  options?: RequestOptions | undefined;
}

/**
 * A token as sent: trimmed (a key read from a file ends with a newline), visible
 * ASCII without spaces. The error never shows the token.
 */
function checkedToken(token: string): string {
  if (typeof token !== "string") throw new TypeError("ReadStateClient: the token must be a string");
  const trimmed = token.trim();
  if (trimmed === "") throw new TypeError("ReadStateClient: the token is empty");
  if (/^bearer\s/i.test(trimmed)) {
    throw new TypeError("ReadStateClient: give the token alone, without the `Bearer ` prefix");
  }
  if (!/^[\x21-\x7e]+$/.test(trimmed)) {
    throw new TypeError("ReadStateClient: the token may only hold visible ASCII characters (no spaces)");
  }
  return trimmed;
}

/** The `Authorization` value of a token. */
function bearer(token: string): string {
  return `Bearer ${checkedToken(token)}`;
}

/** A path segment: the id's decimal string, URL-encoded (strings are sent as given). */
function seg(id: Id, name: string): string {
  return encodeURIComponent(idString(id, name));
}

function userChannel(userId: Id, channelId: Id): string {
  return `/v1/users/${seg(userId, "user_id")}/channels/${seg(channelId, "channel_id")}`;
}

function optionalId(id: Id | null, name: string): string | null {
  return id === null ? null : idString(id, name);
}

function idList(ids: readonly Id[], name: string): string[];
function idList(ids: readonly Id[] | null, name: string): string[] | null;
function idList(ids: readonly Id[] | null, name: string): string[] | null {
  return ids === null ? null : ids.map((id, i) => idString(id, `${name}[${i}]`));
}

const BATCH_ID_FIELDS = [
  "user_id",
  "channel_id",
  "message_id",
  "author_id",
  "last_read_message_id",
  "parent_id",
  "group_id",
] as const;

/** A batch op with its ids as decimal strings; other fields pass through unchanged. */
function batchOp(op: BatchOp, index: number): Schemas["BatchOp"] {
  const source = op as Record<string, unknown>;
  const out: Record<string, unknown> = { ...source };
  for (const field of BATCH_ID_FIELDS) {
    const value = source[field];
    if (value !== undefined && value !== null) out[field] = idString(value as Id, `ops[${index}].${field}`);
  }
  const mentions = source["mentions"];
  if (Array.isArray(mentions)) out["mentions"] = idList(mentions as Id[], `ops[${index}].mentions`);
  return out as Schemas["BatchOp"];
}

/** The SSE messages as typed readstate events (unknown event names are skipped). */
async function* typedEvents(
  messages: AsyncGenerator<{ event: string; data: string; id: string }, void, undefined>,
): AsyncGenerator<ReadStateEvent, void, undefined> {
  try {
    for await (const message of messages) {
      switch (message.event) {
        case "ready":
        case "resync":
          yield { event: message.event, id: message.id, data: JSON.parse(message.data) as { user_id: string } };
          break;
        case "read_state":
          yield { event: "read_state", id: message.id, data: JSON.parse(message.data) as ReadStateChange };
          break;
        default:
          break;
      }
    }
  } finally {
    await messages.return();
  }
}
