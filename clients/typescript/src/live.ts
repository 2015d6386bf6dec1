/**
 * `LiveReadStates`: one user's read states held in memory and kept current from
 * the server's event stream.
 *
 * How it works:
 * 1. `start()` opens `GET /v1/users/{id}/events` and, once the server sent
 *    `ready`, loads every read state (`GET /v1/users/{id}/read-states`). Opening the
 *    stream first means no change made during the load is missed: its event is
 *    read after the load and applied on top.
 * 2. Each `read_state` event carries the read state as it is when the event is
 *    sent: it is upserted, or its channel removed when it is `null`.
 * 3. The id of every event is remembered. When the connection drops (network,
 *    server restart or shutdown) it reconnects after a backoff with
 *    `Last-Event-ID`, and gets exactly the changes it missed, or `resync`.
 * 4. On `resync` (the missed changes are no longer known, or this client fell
 *    behind) it refetches all read states.
 * 5. Every request goes through the client, with its `token`: a token function is
 *    called again for each reconnection and refetch, so a JWT refreshed there is
 *    used from the next one. After the start, a 401, 403 or 429 is told to
 *    `onError` and retried like any failure (a 429 or 503 not before its
 *    `Retry-After`).
 *
 * Not streamed by the server: new messages in a channel (the chat gateway delivers
 * those), so `unread_count`/`last_message_id` of a channel grow stale until the next
 * event of that channel (an ack, a mention, ...). Call `refresh()` when that matters.
 */

import { ReadStateError } from "./errors.js";
import type { ReadStateClient } from "./client.js";
import { idString } from "./ids.js";
import type { Id, ReadState, ReadStateChange, ReadStateEvent, Summary } from "./types.js";

/** The held read states, keyed by channel id (decimal string), in channel id order. */
export type ReadStateMap = ReadonlyMap<string, ReadState>;

/** Why the held states changed. */
export type ChangeCause =
  | { kind: "load" } // initial load, `refresh()`
  | { kind: "resync" } // refetched after a `resync` event
  | { kind: "event"; change: ReadStateChange; id: string }; // one `read_state` event applied

/** Called with the current states after each change. */
export type ChangeListener = (states: ReadStateMap, cause: ChangeCause) => void;

/** Backoff between reconnection attempts: `min(maxMs, initialMs * 2^attempt)`, jittered to 50–100%. */
export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
}

/** Options of {@link LiveReadStates}. */
export interface LiveReadStatesOptions {
  /** The client to read and subscribe with. */
  client: ReadStateClient;
  /** The user whose read states are held. */
  userId: Id;
  /** Reconnection backoff (default 250 ms doubling up to 10 s). */
  backoff?: BackoffOptions;
  /**
   * Reconnect when nothing (not even a heartbeat) arrived for this long; 0 turns it
   * off. Default 45 000 ms, three times the server's default heartbeat (15 s).
   */
  idleTimeoutMs?: number;
  /** How `Last-Event-ID` is sent on reconnect (see `EventsOptions.resumeWith`). */
  resumeWith?: "header" | "query";
  /** Told about every failure that leads to a reconnection (default: ignored). */
  onError?: (error: unknown) => void;
}

/** Counters, for tests and monitoring. */
export interface LiveStats {
  /** Successful connections of the event stream (the first one included). */
  connections: number;
  /** `resync` events received (each followed by a refetch). */
  resyncs: number;
  /** Full loads of the read states: the initial load, resyncs and `refresh()`. */
  refetches: number;
  /** `read_state` events applied. */
  events: number;
  /** Failures that led to a reconnection. */
  errors: number;
}

/** One user's read states, loaded once and kept current from the event stream. */
export class LiveReadStates {
  readonly userId: string;
  readonly #client: ReadStateClient;
  readonly #initialBackoff: number;
  readonly #maxBackoff: number;
  readonly #idleTimeoutMs: number;
  readonly #resumeWith: "header" | "query";
  readonly #onError: ((error: unknown) => void) | undefined;

  #states = new Map<string, ReadState>();
  #snapshot: ReadStateMap | undefined;
  #listeners = new Set<ChangeListener>();
  #lastEventId: string | undefined;
  #loaded = false;
  #connected = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  /** Aborts the current connection (or backoff wait). */
  #connection: AbortController | undefined;
  #stats: LiveStats = { connections: 0, resyncs: 0, refetches: 0, events: 0, errors: 0 };

  constructor(options: LiveReadStatesOptions) {
    this.#client = options.client;
    this.userId = idString(options.userId, "userId");
    this.#initialBackoff = options.backoff?.initialMs ?? 250;
    this.#maxBackoff = options.backoff?.maxMs ?? 10_000;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
    this.#resumeWith = options.resumeWith ?? "header";
    this.#onError = options.onError;
  }

  /**
   * Opens the event stream and loads the read states. Resolves once they are
   * loaded; rejects (and stops) when the first connection or load fails, e.g. with
   * a `ReadStateError` for an invalid user id. Later failures reconnect by
   * themselves.
   */
  async start(): Promise<void> {
    if (this.#running) throw new Error("LiveReadStates: already started");
    this.#stopped = false;
    let resolveStarted!: () => void;
    let rejectStarted!: (error: unknown) => void;
    const started = new Promise<void>((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    this.#running = this.#run(resolveStarted, rejectStarted);
    try {
      await started;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Closes the stream and stops reconnecting. The held states stay readable. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#connection?.abort();
    const running = this.#running;
    this.#running = undefined;
    await running;
    this.#connected = false;
  }

  /** The current read states (an immutable snapshot, by channel id). */
  states(): ReadStateMap {
    if (this.#snapshot === undefined) {
      const sorted = [...this.#states.entries()].sort((a, b) => compareIds(a[0], b[0]));
      this.#snapshot = new Map(sorted);
    }
    return this.#snapshot;
  }

  /** The read state of one channel, if held. */
  get(channelId: Id): ReadState | undefined {
    return this.#states.get(idString(channelId, "channelId"));
  }

  /**
   * Unread channels and mention total of the held states, by the rules of
   * `GET .../summary`: a state counts as unread when it has `has_unread`, is not
   * muted and its level is `all`; its mentions count unless its level is `nothing`.
   * A read state does not say whether its channel is a thread, so threads count in
   * `unread_channels` here and `unread_threads` is 0: call `client.summary()` for
   * the split. `muted` is as of the last change received.
   */
  summary(): Summary {
    let unread_channels = 0;
    let mentions = 0;
    for (const state of this.#states.values()) {
      if (state.has_unread && !state.muted && state.level === "all") unread_channels++;
      if (state.level !== "nothing") mentions += state.mention_count;
    }
    return { unread_channels, unread_threads: 0, mentions };
  }

  /** Calls `listener` with the current states after each change; returns the unsubscribe function. */
  onChange(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** Refetches every read state now (e.g. after new messages, which are not streamed). */
  async refresh(): Promise<void> {
    await this.#reload({ kind: "load" }, undefined);
  }

  /** The id of the last event handled: where a reconnection resumes. */
  get lastEventId(): string | undefined {
    return this.#lastEventId;
  }

  /** Whether the event stream is open right now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Counters of connections, resyncs, refetches, events and errors. */
  get stats(): Readonly<LiveStats> {
    return { ...this.#stats };
  }

  // -- the connection loop --------------------------------------------------------

  async #run(resolveStarted: () => void, rejectStarted: (error: unknown) => void): Promise<void> {
    let started = false;
    let attempt = 0;
    while (!this.#stopped) {
      const connection = new AbortController();
      this.#connection = connection;
      let idle: ReturnType<typeof setTimeout> | undefined;
      const armIdle = () => {
        if (this.#idleTimeoutMs <= 0) return;
        if (idle !== undefined) clearTimeout(idle);
        idle = setTimeout(() => connection.abort(new Error("event stream idle: reconnecting")), this.#idleTimeoutMs);
      };
      let retryAfterMs = 0;
      try {
        const resumeFrom = this.#lastEventId;
        armIdle();
        const events = await this.#client.events(this.userId, {
          signal: connection.signal,
          lastEventId: resumeFrom,
          resumeWith: this.#resumeWith,
          onActivity: armIdle,
        });
        this.#connected = true;
        this.#stats.connections++;
        for await (const event of events) {
          await this.#handle(event, resumeFrom, connection.signal);
          attempt = 0;
          if (!started && this.#loaded) {
            started = true;
            resolveStarted();
          }
          if (this.#stopped) break;
        }
        // The server closed the stream (shutdown): reconnect.
      } catch (error) {
        if (this.#stopped) break;
        this.#stats.errors++;
        if (!started) {
          rejectStarted(error);
          return;
        }
        if (error instanceof ReadStateError && error.retryAfter !== undefined) retryAfterMs = error.retryAfter * 1000;
        this.#onError?.(error);
      } finally {
        if (idle !== undefined) clearTimeout(idle);
        this.#connected = false;
        connection.abort();
      }
      if (this.#stopped) break;
      const base = Math.min(this.#maxBackoff, this.#initialBackoff * 2 ** Math.min(attempt, 30));
      attempt++;
      await this.#sleep(Math.max(retryAfterMs, base * (0.5 + Math.random() * 0.5)));
    }
    if (!started) rejectStarted(new Error("LiveReadStates: stopped before it started"));
  }

  async #handle(event: ReadStateEvent, resumedFrom: string | undefined, signal: AbortSignal): Promise<void> {
    switch (event.event) {
      case "ready":
        // A fresh stream (nothing to resume, or never loaded): load now; events that
        // arrive meanwhile are read afterwards and applied on top. A resumed stream
        // replays what was missed instead.
        if (resumedFrom === undefined || !this.#loaded) await this.#reload({ kind: "load" }, signal);
        break;
      case "resync":
        this.#stats.resyncs++;
        await this.#reload({ kind: "resync" }, signal);
        break;
      case "read_state":
        this.#apply(event.data, event.id);
        break;
    }
    // Remembered only once handled: a failed reload resumes from before it.
    if (event.id !== "") this.#lastEventId = event.id;
  }

  #apply(change: ReadStateChange, id: string): void {
    if (change.user_id !== this.userId) return;
    if (change.read_state === null) this.#states.delete(change.channel_id);
    else this.#states.set(change.channel_id, change.read_state);
    this.#stats.events++;
    this.#changed({ kind: "event", change, id });
  }

  async #reload(cause: ChangeCause, signal: AbortSignal | undefined): Promise<void> {
    const answer = await this.#client.readStates(this.userId, {}, signal ? { signal } : undefined);
    this.#states = new Map(answer.read_states.map((state) => [state.channel_id, state]));
    this.#loaded = true;
    this.#stats.refetches++;
    this.#changed(cause);
  }

  #changed(cause: ChangeCause): void {
    this.#snapshot = undefined;
    if (this.#listeners.size === 0) return;
    const states = this.states();
    for (const listener of [...this.#listeners]) {
      try {
        listener(states, cause);
      } catch (error) {
        // A listener's failure must not break the stream.
        this.#onError?.(error);
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    const controller = new AbortController();
    this.#connection = controller;
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      controller.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/** Orders decimal id strings numerically. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
