// LiveReadStates against a real readstate: convergence, resume, and resync forced two
// ways (a server restart; a subscriber that falls behind its buffer).

import assert from "node:assert/strict";
import { after, before, describe, test, type TestContext } from "node:test";

import { LiveReadStates, ReadStateClient, ReadStateError } from "../src/index.js";
import type { ChangeCause, ReadState, ReadStateMap } from "../src/index.js";
import { freshId, startServer, waitUntil, type ReadstateServer } from "./helpers.js";

const FAST_BACKOFF = { initialMs: 50, maxMs: 500 };

/** A LiveReadStates that is stopped when the test ends, whatever happens. */
function track(t: TestContext, live: LiveReadStates): LiveReadStates {
  t.after(() => live.stop());
  return live;
}

/** The held states and the server's, as comparable JSON. */
async function compare(live: LiveReadStates, client: ReadStateClient): Promise<{ held: string; server: string }> {
  const held = JSON.stringify([...live.states().values()]);
  const server = JSON.stringify((await client.readStates(live.userId)).read_states);
  return { held, server };
}

/** Waits until the held states equal `GET read-states` (with a generous deadline). */
async function converged(live: LiveReadStates, client: ReadStateClient): Promise<void> {
  let last = { held: "", server: "" };
  await waitUntil(
    async () => {
      last = await compare(live, client);
      return last.held === last.server;
    },
    () => `held states to equal the server's\n  held:   ${last.held}\n  server: ${last.server}`,
  );
}

describe("LiveReadStates", () => {
  let server: ReadstateServer;
  let client: ReadStateClient;

  before(async () => {
    server = await startServer();
    client = new ReadStateClient({ baseUrl: server.baseUrl });
  });
  after(async () => {
    await server?.close();
  });

  test("loads, applies every kind of change, and converges with GET read-states", async (t) => {
    const [user, author, c1, c2, c3, c4] = [freshId(), freshId(), freshId(), freshId(), freshId(), freshId()];
    // Something to load at start.
    await client.createMessage(c1, { message_id: 1, author_id: author });
    await client.join(user, c1, { last_read_message_id: 0 });

    const live = track(t, new LiveReadStates({ client, userId: user, backoff: FAST_BACKOFF }));
    const causes: ChangeCause["kind"][] = [];
    let lastSeen: ReadStateMap | undefined;
    const unsubscribe = live.onChange((states, cause) => {
      causes.push(cause.kind);
      lastSeen = states;
    });
    await live.start();
    assert.ok(live.connected);
    assert.deepEqual(live.stats, { connections: 1, resyncs: 0, refetches: 1, events: 0, errors: 0 });
    assert.deepEqual(causes, ["load"]);
    assert.equal(live.get(c1)?.unread_count, 1);
    assert.equal(lastSeen, live.states());
    await converged(live, client);

    // Every kind of change the stream reports (new messages alone are not streamed,
    // so each is one the user authored or is mentioned in).
    await client.createMessage(c1, { message_id: 2, author_id: author, mentions: [user] }); // mention
    await client.ack(user, c1, { message_id: 1 }); // ack
    await client.markUnread(user, c1, { message_id: 1 }); // unread
    await client.join(user, c2); // join
    await client.createMessage(c2, { message_id: 5, author_id: user }); // ack (author)
    await client.join(user, c3, { last_read_message_id: 0 });
    await client.createMessage(c3, { message_id: 8, author_id: author, mentions: [user] });
    await client.deleteMessage(c1, 2); // message_deleted
    await client.leave(user, c2); // leave
    await client.deleteChannel(c3); // channel_deleted
    await client.batch([
      { op: "join", user_id: user, channel_id: c4, last_read_message_id: 0 },
      { op: "message_created", channel_id: c4, message_id: 20, author_id: author, mentions: [user] },
    ]);
    await converged(live, client);
    assert.deepEqual(
      [...live.states().keys()],
      [c1, c4].map(String),
    );
    assert.deepEqual(live.summary(), await client.summary(user));
    assert.equal(live.summary().mentions, 1);

    await client.ackAll(user); // ack for each channel
    await converged(live, client);
    assert.deepEqual(live.summary(), { unread_channels: 0, unread_threads: 0, mentions: 0 });
    assert.ok(live.stats.events >= 10, `events applied: ${live.stats.events}`);
    assert.equal(live.stats.resyncs, 0);
    assert.ok(causes.filter((c) => c === "event").length >= 10);
    assert.equal(lastSeen, live.states());

    // Unsubscribed listeners are not called any more.
    unsubscribe();
    const before = causes.length;
    await client.join(user, c2);
    await converged(live, client);
    assert.equal(causes.length, before);

    // refresh() picks up what is not streamed (a plain new message).
    await client.createMessage(c2, { message_id: 30, author_id: author });
    assert.equal(live.get(c2)?.unread_count, 0);
    await live.refresh();
    assert.equal(live.get(c2)?.unread_count, 1);
    await converged(live, client);

    await live.stop();
    assert.equal(live.connected, false);
    // Stopped: changes are no longer applied, the last states stay readable.
    await client.leave(user, c2);
    const held = live.states();
    await client.ack(user, c1, { message_id: 1 });
    assert.ok(held.has(String(c2)));
    assert.equal(live.states(), held);
  });

  test("states() is an immutable snapshot per change", async (t) => {
    const [user, channel] = [freshId(), freshId()];
    const live = track(t, new LiveReadStates({ client, userId: user, backoff: FAST_BACKOFF }));
    await live.start();
    const empty = live.states();
    assert.equal(empty.size, 0);
    await client.join(user, channel);
    await waitUntil(() => live.states().size === 1, () => "the join to arrive");
    assert.equal(empty.size, 0);
    assert.equal(live.states(), live.states());
    await live.stop();
  });

  test("start() rejects with the ReadStateError of an invalid user", async (t) => {
    const live = track(t, new LiveReadStates({ client, userId: "0", backoff: FAST_BACKOFF }));
    await assert.rejects(live.start(), (error: unknown) => {
      assert.ok(error instanceof ReadStateError);
      assert.equal(error.status, 400);
      assert.equal(error.field, "user_id");
      return true;
    });
    assert.equal(live.connected, false);
  });

  test("a listener that throws does not break the stream", async (t) => {
    const [user, channel] = [freshId(), freshId()];
    const errors: unknown[] = [];
    const live = track(t, new LiveReadStates({ client, userId: user, backoff: FAST_BACKOFF, onError: (e) => errors.push(e) }));
    live.onChange(() => {
      throw new Error("listener failed");
    });
    await live.start();
    await client.join(user, channel);
    await client.ack(user, channel, { message_id: 3 });
    await converged(live, client);
    assert.ok(errors.length >= 1);
    assert.equal(live.stats.connections, 1);
    await live.stop();
  });
});

describe("LiveReadStates resync: server restart", () => {
  let server: ReadstateServer;
  let client: ReadStateClient;

  before(async () => {
    server = await startServer();
    client = new ReadStateClient({ baseUrl: server.baseUrl });
  });
  after(async () => {
    await server?.close();
  });

  test("reconnects with Last-Event-ID after a restart, gets resync, refetches and converges", async (t) => {
    const [user, author, c1, c2] = [freshId(), freshId(), freshId(), freshId()];
    await client.join(user, c1, { last_read_message_id: 0 });

    // A gate on the event-stream requests, closed while the server restarts, so
    // that the writes below certainly land before the reconnection.
    let gate: Promise<void> | undefined;
    let openGate = () => {};
    const gated = new ReadStateClient({
      baseUrl: server.baseUrl,
      fetch: async (input, init) => {
        if (gate !== undefined && input.includes("/events")) {
          const signal = init.signal;
          await Promise.race([gate, new Promise((resolve) => signal?.addEventListener("abort", resolve))]);
        }
        return fetch(input, init);
      },
    });
    const live = track(t, new LiveReadStates({ client: gated, userId: user, backoff: FAST_BACKOFF }));
    const resyncs: ReadStateMap[] = [];
    live.onChange((states, cause) => {
      if (cause.kind === "resync") resyncs.push(states);
    });
    await live.start();
    await client.ack(user, c1, { message_id: 4 });
    await converged(live, client);
    const idBefore = live.lastEventId;
    assert.ok(idBefore);
    assert.deepEqual(
      { resyncs: live.stats.resyncs, refetches: live.stats.refetches, connections: live.stats.connections },
      { resyncs: 0, refetches: 1, connections: 1 },
    );

    // Same port, same data directory, new process: a new event-id prefix, so the
    // old Last-Event-ID cannot be resumed.
    gate = new Promise((resolve) => {
      openGate = resolve;
    });
    const port = server.port;
    await server.stop();
    await waitUntil(() => !live.connected, () => "the stream to drop");
    await server.start();
    assert.equal(server.port, port);

    // Changes the old stream never saw. A plain new message (60) is never streamed:
    // only the refetch after `resync` can bring it.
    await client.createMessage(c2, { message_id: 50, author_id: author, mentions: [user] });
    await client.join(user, c2, { last_read_message_id: 0 });
    await client.createMessage(c1, { message_id: 60, author_id: author });
    gate = undefined;
    openGate();

    await waitUntil(() => live.stats.resyncs >= 1, () => `a resync (stats ${JSON.stringify(live.stats)})`);
    await converged(live, client);
    assert.ok(live.connected);
    assert.equal(live.stats.connections, 2);
    assert.equal(live.stats.resyncs, 1);
    assert.equal(live.stats.refetches, 2);
    assert.equal(resyncs.length, 1);
    assert.notEqual(live.lastEventId?.split("-")[0], idBefore.split("-")[0], "ids of the new process");
    assert.equal(live.get(c1)?.unread_count, 1); // message 60, brought by the refetch
    assert.equal(live.get(c1)?.last_message_id, "60");
    assert.equal(live.get(c2)?.mention_count, 1);

    // And it keeps applying live changes afterwards.
    await client.ack(user, c2, { message_id: 50 });
    await converged(live, client);
    assert.equal(live.get(c2)?.mention_count, 0);
    assert.equal(live.stats.resyncs, 1);
  });

  test("a short disconnect resumes without resync (the missed changes are replayed)", async (t) => {
    const [user, c1] = [freshId(), freshId()];
    // A fetch whose first event stream is cut after the first change: the
    // reconnection resumes with Last-Event-ID on the same server.
    let cut: AbortController | undefined;
    const cutting = new ReadStateClient({
      baseUrl: server.baseUrl,
      fetch: (input, init) => {
        if (input.includes("/events") && cut === undefined) {
          cut = new AbortController();
          const outer = init.signal;
          outer?.addEventListener("abort", () => cut?.abort(outer.reason));
          return fetch(input, { ...init, signal: cut.signal });
        }
        return fetch(input, init);
      },
    });
    const live = track(t, new LiveReadStates({ client: cutting, userId: user, backoff: { initialMs: 300, maxMs: 300 } }));
    await live.start();
    await client.join(user, c1, { last_read_message_id: 0 });
    await waitUntil(() => live.states().size === 1, () => "the join to arrive");
    cut?.abort(new Error("network cut"));
    await client.ack(user, c1, { message_id: 9 });
    await client.ack(user, c1, { message_id: 10 });
    await converged(live, client);
    assert.equal(live.stats.connections, 2);
    assert.equal(live.stats.resyncs, 0);
    assert.equal(live.stats.refetches, 1);
    assert.equal(live.stats.errors, 1);
    await live.stop();
  });
});

describe("LiveReadStates resync: subscriber falls behind its buffer", () => {
  let server: ReadstateServer;
  let client: ReadStateClient;

  before(async () => {
    // One queued change per subscriber: a burst of changes overflows it and the
    // server sends `resync` instead of the backlog.
    server = await startServer({ env: { READSTATE_EVENTS__SUBSCRIBER_BUFFER: "1" } });
    client = new ReadStateClient({ baseUrl: server.baseUrl });
  });
  after(async () => {
    await server?.close();
  });

  test("a burst of writes makes the server send resync; it refetches and converges", async (t) => {
    const user = freshId();
    const live = track(t, new LiveReadStates({ client, userId: user, backoff: FAST_BACKOFF }));
    const seen: ReadState[][] = [];
    live.onChange((states, cause) => {
      if (cause.kind === "resync") seen.push([...states.values()]);
    });
    await live.start();

    // Bursts of 200 changes of this user in one request each (acks in 200 channels),
    // until one overflowed the buffer: the first burst does in practice; the number
    // of tries is bounded.
    const channels = Array.from({ length: 200 }, () => freshId());
    let message = 100;
    for (let burst = 0; burst < 20 && live.stats.resyncs === 0; burst++) {
      message += 1;
      const position = String(message);
      const { results } = await client.batch(
        channels.map((channel) => ({ op: "ack" as const, user_id: user, channel_id: channel, message_id: position })),
      );
      assert.ok(results.every((r) => r.ok));
      // Wait until this burst is fully reflected (through events or a resync).
      await waitUntil(
        () => [...live.states().values()].filter((s) => s.last_read_message_id === position).length === 200,
        () => `burst ${burst} to be reflected (stats ${JSON.stringify(live.stats)})`,
      );
    }
    assert.ok(live.stats.resyncs >= 1, `no resync after the bursts: ${JSON.stringify(live.stats)}`);
    // Every resync is followed by one refetch (a later burst may still be resyncing).
    await waitUntil(
      () => live.stats.refetches === 1 + live.stats.resyncs,
      () => `a refetch per resync (stats ${JSON.stringify(live.stats)})`,
    );
    assert.ok(seen.length >= 1);
    await converged(live, client);
    assert.equal(live.states().size, 200);

    // Converges again after more changes.
    const author = freshId();
    await client.createMessage(channels[0] ?? 1, { message_id: 1000, author_id: author, mentions: [user] });
    await client.markUnread(user, channels[1] ?? 1, { message_id: 50 });
    await converged(live, client);
    assert.deepEqual(live.summary(), { unread_channels: 1, unread_threads: 0, mentions: 1 });
    await live.stop();
  });
});
