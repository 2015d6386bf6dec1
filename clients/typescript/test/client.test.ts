// Every ReadStateClient method against a real readstate.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ReadStateClient, ReadStateError } from "../src/index.js";
import type { BatchOp, FetchLike, ReadState, ReadStateEvent } from "../src/index.js";
import { freshId, startServer, type ReadstateServer } from "./helpers.js";

const PROBLEMS = "https://readstate.dev/problems/";

let server: ReadstateServer;
let client: ReadStateClient;

before(async () => {
  server = await startServer();
  client = new ReadStateClient({ baseUrl: server.baseUrl });
});

after(async () => {
  await server?.close();
});

/** Asserts that `promise` rejects with a ReadStateError and returns it. */
async function problem(promise: Promise<unknown>): Promise<ReadStateError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ReadStateError, `expected a ReadStateError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection");
}

function state(fields: Partial<ReadState> & { channel_id: string }): ReadState {
  return {
    last_read_message_id: "0",
    last_message_id: "0",
    has_unread: false,
    unread_count: 0,
    unread_capped: false,
    mention_count: 0,
    mention_capped: false,
    first_unread_message_id: null,
    muted: false,
    level: "all",
    ...fields,
  };
}

describe("operations", () => {
  test("healthz, readyz, metrics, openApi", async () => {
    assert.deepEqual(await client.healthz(), { status: "ok" });
    assert.deepEqual(await client.readyz(), { status: "ready" });
    const metrics = await client.metrics();
    assert.match(metrics, /^# (HELP|TYPE) readstate_/m);
    assert.match(metrics, /readstate_events_subscribers/);
    const doc = await client.openApi();
    assert.equal(doc["openapi"], "3.1.0");
  });
});

describe("read states", () => {
  test("message created, join at 0, ack, unread, get, list, summary, leave", async () => {
    const [author, user, channel] = [freshId(), freshId(), freshId()];
    await client.createMessage(channel, { message_id: 500, author_id: author });

    const joined = await client.join(user, channel, { last_read_message_id: 0 });
    assert.deepEqual(
      joined,
      state({
        channel_id: String(channel),
        last_message_id: "500",
        has_unread: true,
        unread_count: 1,
        first_unread_message_id: "500",
      }),
    );
    // Join is a no-op when the state exists.
    assert.deepEqual(await client.join(user, channel), joined);
    assert.deepEqual(await client.getReadState(user, channel), joined);

    await client.createMessage(channel, { message_id: 501, author_id: author, mentions: [user] });
    const mentioned = await client.getReadState(String(user), BigInt(channel));
    assert.equal(mentioned.unread_count, 2);
    assert.equal(mentioned.mention_count, 1);
    assert.equal(mentioned.last_message_id, "501");

    const acked = await client.ack(user, channel, { message_id: 500 });
    assert.deepEqual(
      acked,
      state({
        channel_id: String(channel),
        last_read_message_id: "500",
        last_message_id: "501",
        has_unread: true,
        unread_count: 1,
        mention_count: 1,
        first_unread_message_id: "501",
      }),
    );
    // The position never moves back.
    assert.equal((await client.ack(user, channel, { message_id: 1 })).last_read_message_id, "500");

    const all = await client.ack(user, channel, { message_id: "501", at: Date.now() });
    assert.equal(all.unread_count, 0);
    assert.equal(all.has_unread, false);

    const unread = await client.markUnread(user, channel, { message_id: 501 });
    assert.equal(unread.last_read_message_id, "500");
    assert.equal(unread.unread_count, 1);
    assert.equal(unread.mention_count, 1);

    // A second channel, joined at its head: nothing unread.
    const other = freshId();
    await client.createMessage(other, { message_id: 7, author_id: author });
    assert.deepEqual(
      await client.join(user, other),
      state({ channel_id: String(other), last_read_message_id: "7", last_message_id: "7" }),
    );

    const list = await client.readStates(user);
    assert.deepEqual(
      list.read_states.map((s) => s.channel_id),
      [channel, other].sort((a, b) => a - b).map(String),
    );
    const filtered = await client.readStates(user, { channels: [other] });
    assert.deepEqual(filtered.read_states.map((s) => s.channel_id), [String(other)]);

    assert.deepEqual(await client.summary(user), { unread_channels: 1, unread_threads: 0, mentions: 1 });

    await client.leave(user, other);
    await client.leave(user, other); // idempotent
    const gone = await problem(client.getReadState(user, other));
    assert.equal(gone.status, 404);
    assert.equal(gone.type, `${PROBLEMS}not-found`);
    assert.equal(gone.kind, "not-found");
    assert.equal(gone.field, undefined);
    assert.equal(gone.retryAfter, undefined);
  });

  test("ack-all moves every read state to its channel head", async () => {
    const [author, user, c1, c2] = [freshId(), freshId(), freshId(), freshId()];
    for (const channel of [c1, c2]) {
      await client.join(user, channel, { last_read_message_id: 0 });
      await client.createMessage(channel, { message_id: 10, author_id: author, mentions: [user] });
      await client.createMessage(channel, { message_id: 11, author_id: author });
    }
    assert.deepEqual(await client.summary(user), { unread_channels: 2, unread_threads: 0, mentions: 2 });
    const answer = await client.ackAll(user);
    assert.equal(answer.read_states.length, 2);
    for (const s of answer.read_states) {
      assert.equal(s.last_read_message_id, "11");
      assert.equal(s.unread_count, 0);
      assert.equal(s.mention_count, 0);
    }
    assert.deepEqual(await client.summary(user), { unread_channels: 0, unread_threads: 0, mentions: 0 });
  });

  test("a missing read state is a 404 ReadStateError", async () => {
    const error = await problem(client.getReadState(freshId(), freshId()));
    assert.equal(error.status, 404);
    assert.equal(error.kind, "not-found");
    assert.equal(error.title, "Not found");
    assert.equal(typeof error.detail, "string");
    assert.equal(error.problem.status, 404);
  });
});

describe("channels", () => {
  test("delete message: it stops counting as unread and as a mention", async () => {
    const [author, user, channel] = [freshId(), freshId(), freshId()];
    await client.join(user, channel, { last_read_message_id: 0 });
    await client.createMessage(channel, { message_id: 1, author_id: author, mentions: [user] });
    await client.createMessage(channel, { message_id: 2, author_id: author });
    let s = await client.getReadState(user, channel);
    assert.equal(s.unread_count, 2);
    assert.equal(s.mention_count, 1);
    await client.deleteMessage(channel, 1);
    s = await client.getReadState(user, channel);
    assert.equal(s.unread_count, 1);
    assert.equal(s.mention_count, 0);
    await client.deleteMessage(channel, 2);
    s = await client.getReadState(user, channel);
    assert.equal(s.unread_count, 0);
    assert.equal(s.last_message_id, "0");
  });

  test("delete channel removes every read state in it", async () => {
    const [u1, u2, channel] = [freshId(), freshId(), freshId()];
    await client.createMessage(channel, { message_id: 3, author_id: u1 });
    await client.join(u2, channel, { last_read_message_id: 0 });
    await client.deleteChannel(channel);
    assert.equal((await problem(client.getReadState(u1, channel))).status, 404);
    assert.equal((await problem(client.getReadState(u2, channel))).status, 404);
    assert.deepEqual((await client.readStates(u2)).read_states, []);
  });

  test("readers, page by page and all at once", async () => {
    const channel = freshId();
    const users = [freshId(), freshId(), freshId(), freshId(), freshId()];
    const late = freshId();
    await client.createMessage(channel, { message_id: 40 });
    await client.createMessage(channel, { message_id: 41 });
    for (const user of users) await client.ack(user, channel, { message_id: 41 });
    await client.join(late, channel, { last_read_message_id: 0 }); // not a reader

    const page1 = await client.readers(channel, 41, { limit: 2 });
    assert.deepEqual(page1.readers, users.slice(0, 2).map(String));
    assert.ok(page1.next);
    const page2 = await client.readers(channel, 41, { limit: 2, after: page1.next });
    assert.deepEqual(page2.readers, users.slice(2, 4).map(String));
    assert.ok(page2.next);
    const page3 = await client.readers(channel, 41, { limit: 2, after: page2.next });
    assert.deepEqual(page3.readers, users.slice(4).map(String));
    assert.equal(page3.next ?? null, null);

    const all: string[] = [];
    for await (const reader of client.allReaders(channel, 40, { limit: 2 })) all.push(reader);
    assert.deepEqual(all, users.map(String));

    assert.deepEqual((await client.readers(channel, 41)).readers, users.map(String));
  });
});

describe("threads, groups, settings, deleting and exporting a user", () => {
  test("setChannel and getChannel; a cycle is a 400 naming parent_id", async () => {
    const [parent, thread, group] = [freshId(), freshId(), freshId()];
    assert.equal((await problem(client.getChannel(thread))).status, 404);
    const set = await client.setChannel(thread, { parent_id: parent, group_id: BigInt(group), at: 1 });
    const expected = { channel_id: String(thread), parent_id: String(parent), group_id: String(group), last_message_id: "0" };
    assert.deepEqual(set, expected);
    assert.deepEqual(await client.getChannel(thread), expected);
    const cycle = await problem(client.setChannel(parent, { parent_id: thread }));
    assert.equal(cycle.status, 400);
    assert.equal(cycle.field, "parent_id");
  });

  test("updateSettings, summary, groupSummary, groups and threads", async () => {
    const [author, user, parent, thread, muted, group] = [freshId(), freshId(), freshId(), freshId(), freshId(), freshId()];
    await client.setChannel(parent, { group_id: group });
    await client.setChannel(thread, { parent_id: parent });
    await client.setChannel(muted, { group_id: group });
    for (const channel of [parent, thread, muted]) {
      await client.createMessage(channel, { message_id: 5, author_id: author, mentions: [user] });
    }
    const state = await client.updateSettings(user, muted, { muted_until: null, level: "mentions" });
    assert.equal(state.muted, true);
    assert.equal(state.level, "mentions");
    assert.equal(state.first_unread_message_id, "5");
    // An absent field keeps its value.
    assert.equal((await client.updateSettings(user, muted, {})).muted, true);

    const expected = { unread_channels: 1, unread_threads: 1, mentions: 3 };
    assert.deepEqual(await client.summary(user), expected);
    assert.deepEqual(await client.groupSummary(user, group), expected);
    assert.deepEqual(await client.groups(user), { groups: { [String(group)]: expected } });
    const inGroup = await client.readStates(user, { group_id: group });
    assert.equal(inGroup.read_states.length, 3);

    const threads = await client.threads(user, parent, { limit: 1 });
    assert.equal(threads.unread_threads, 1);
    assert.equal(threads.mentions, 1);
    assert.deepEqual(
      threads.read_states.map((s) => s.channel_id),
      [String(thread)],
    );
    assert.equal(threads.next ?? null, null);
  });

  test("deleteUser removes everything; exportUser shows what is stored", async () => {
    const [author, user, channel] = [freshId(), freshId(), freshId()];
    await client.createMessage(channel, { message_id: 8, author_id: author, mentions: [user] });
    await client.updateSettings(user, channel, { level: "nothing", at: 42 });
    const exported = await client.exportUser(user);
    assert.deepEqual(exported, {
      user_id: String(user),
      read_states: [
        {
          channel_id: String(channel),
          epoch: "0",
          last_read_message_id: "0",
          mention_ids: ["8"],
          muted_until: 0,
          muted_at: 0,
          level: "nothing",
          level_at: 42,
        },
      ],
    });
    await client.deleteUser(user);
    await client.deleteUser(user); // idempotent
    assert.deepEqual((await client.readStates(user)).read_states, []);
    assert.deepEqual((await client.exportUser(user)).read_states, []);
  });

  test("the new batch ops", async () => {
    const [user, channel, parent] = [freshId(), freshId(), freshId()];
    const ops: BatchOp[] = [
      { op: "set_channel", channel_id: channel, parent_id: parent, at: 1 },
      { op: "settings", user_id: user, channel_id: channel, muted_until: null },
      { op: "settings", user_id: user, channel_id: channel, level: "loud" as "all" },
      { op: "delete_user", user_id: freshId() },
    ];
    const answer = await client.batch(ops);
    assert.deepEqual(
      answer.results.map((r) => r.ok),
      [true, true, false, true],
    );
    assert.equal(answer.results[2]?.error?.field, "ops[2].level");
    assert.equal((await client.getReadState(user, channel)).muted, true);
  });
});

describe("many users and batches", () => {
  test("summaries of many users, keyed by user id", async () => {
    const [author, u1, u2, nobody, channel] = [freshId(), freshId(), freshId(), freshId(), freshId()];
    await client.join(u1, channel, { last_read_message_id: 0 });
    await client.join(u2, channel, { last_read_message_id: 0 });
    await client.createMessage(channel, { message_id: 9, author_id: author, mentions: [u1] });
    const answer = await client.summaries([u1, BigInt(u2), String(nobody), u1]);
    assert.deepEqual(answer.summaries, {
      [String(u1)]: { unread_channels: 1, unread_threads: 0, mentions: 1 },
      [String(u2)]: { unread_channels: 1, unread_threads: 0, mentions: 0 },
      [String(nobody)]: { unread_channels: 0, unread_threads: 0, mentions: 0 },
    });
  });

  test("batch: each op has its own result; a bad op fails alone with a problem", async () => {
    const [author, user, channel] = [freshId(), freshId(), freshId()];
    const ops: BatchOp[] = [
      { op: "join", user_id: user, channel_id: channel, last_read_message_id: 0 },
      { op: "message_created", channel_id: channel, message_id: 70, author_id: author, mentions: [user] },
      { op: "ack", user_id: "0", channel_id: channel, message_id: 70 }, // bad user id
      { op: "message_created", channel_id: channel, message_id: 71n, author_id: author },
      { op: "ack", user_id: user, channel_id: channel, message_id: 70 },
    ];
    const { results } = await client.batch(ops);
    assert.equal(results.length, 5);
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, false, true, true],
    );
    const error = results[2]?.error;
    assert.ok(error);
    assert.equal(error.status, 400);
    assert.equal(error.type, `${PROBLEMS}invalid-input`);
    assert.equal(error.field, "ops[2].user_id");
    // The other ops were applied.
    const s = await client.getReadState(user, channel);
    assert.equal(s.last_read_message_id, "70");
    assert.equal(s.last_message_id, "71");
    assert.equal(s.unread_count, 1);

    const more = await client.batch([
      { op: "unread", user_id: user, channel_id: channel, message_id: 70 },
      { op: "message_deleted", channel_id: channel, message_id: 71 },
      { op: "ack_all", user_id: user },
      { op: "leave", user_id: user, channel_id: channel },
      { op: "delete_channel", channel_id: channel },
    ]);
    assert.deepEqual(
      more.results.map((r) => r.ok),
      [true, true, true, true, true],
    );
    assert.equal((await problem(client.getReadState(user, channel))).status, 404);
  });

  test("an unknown op fails alone; too many ops is a 400 ReadStateError", async () => {
    const { results } = await client.batch([{ op: "nope" } as unknown as BatchOp, { op: "ack_all", user_id: 1 }]);
    assert.equal(results[0]?.ok, false);
    assert.equal(results[0]?.error?.field, "ops[0].op");
    assert.equal(results[1]?.ok, true);

    const tooMany: BatchOp[] = Array.from({ length: 1001 }, () => ({ op: "ack_all", user_id: 1 }));
    const error = await problem(client.batch(tooMany));
    assert.equal(error.status, 400);
    assert.equal(error.kind, "invalid-input");
    assert.equal(error.field, "ops");
  });
});

describe("errors and ids", () => {
  test("a 400 problem surfaces as ReadStateError with field", async () => {
    const badPath = await problem(client.getReadState("abc", 1));
    assert.equal(badPath.status, 400);
    assert.equal(badPath.type, `${PROBLEMS}invalid-input`);
    assert.equal(badPath.kind, "invalid-input");
    assert.equal(badPath.title, "Invalid input");
    assert.equal(badPath.field, "user_id");
    assert.match(badPath.detail, /user_id: must be an integer/);
    assert.match(badPath.message, /^400 Invalid input: /);

    const badBody = await problem(client.ack(1, 1, { message_id: "0" }));
    assert.equal(badBody.status, 400);
    assert.equal(badBody.field, "message_id");

    const badQuery = await problem(client.readers(1, 1, { limit: 0 }));
    assert.equal(badQuery.status, 400);
    assert.equal(badQuery.field, "limit");

    const badList = await problem(client.summaries(["x"]));
    assert.equal(badList.field, "user_ids[0]");
  });

  test("ids as string, bigint or number are the same id; the largest id works", async () => {
    const max = 2n ** 63n - 1n;
    const channel = freshId();
    await client.createMessage(channel, { message_id: max, author_id: max });
    const s = await client.getReadState(String(max), channel);
    assert.equal(s.last_read_message_id, max.toString());
    assert.deepEqual(await client.getReadState(max, BigInt(channel)), s);

    const tooBig = await problem(client.getReadState(2n ** 63n, channel));
    assert.equal(tooBig.field, "user_id");

    // Numbers that cannot be exact are refused before anything is sent.
    await assert.rejects(client.getReadState(2 ** 60, 1), RangeError);
    await assert.rejects(client.getReadState(-1, 1), RangeError);
    await assert.rejects(client.getReadState(1.5, 1), RangeError);
  });

  test("503 answers carry retryAfter (any fetch can be plugged in)", async () => {
    const fake: FetchLike = async () =>
      new Response(
        JSON.stringify({
          type: `${PROBLEMS}overloaded`,
          title: "Overloaded",
          status: 503,
          detail: "too many requests in flight; retry later",
        }),
        { status: 503, headers: { "content-type": "application/problem+json", "retry-after": "1" } },
      );
    const error = await problem(new ReadStateClient({ baseUrl: "http://unused", fetch: fake }).summary(1));
    assert.equal(error.status, 503);
    assert.equal(error.kind, "overloaded");
    assert.equal(error.retryAfter, 1);

    const html: FetchLike = async () => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" });
    const other = await problem(new ReadStateClient({ baseUrl: "http://unused", fetch: html }).summary(1));
    assert.equal(other.status, 502);
    assert.equal(other.type, "about:blank");
    assert.equal(other.title, "Bad Gateway");
  });

  test("headers (fixed or computed) are sent with every request", async () => {
    const seen: Headers[] = [];
    const recording: FetchLike = (input, init) => {
      seen.push(new Headers(init.headers));
      return fetch(input, init);
    };
    let token = 0;
    const withToken = new ReadStateClient({
      baseUrl: `${server.baseUrl}/`,
      fetch: recording,
      headers: () => ({ authorization: `Bearer t${++token}` }),
    });
    await withToken.healthz();
    await withToken.summary(1, { headers: { "x-request-id": "abc" } });
    assert.equal(seen[0]?.get("authorization"), "Bearer t1");
    assert.equal(seen[1]?.get("authorization"), "Bearer t2");
    assert.equal(seen[1]?.get("x-request-id"), "abc");

    const fixed = new ReadStateClient({ baseUrl: server.baseUrl, fetch: recording, headers: { authorization: "Bearer x" } });
    await fixed.join(freshId(), freshId());
    assert.equal(seen[2]?.get("authorization"), "Bearer x");
    assert.equal(seen[2]?.get("content-type"), null); // join without a body sends none
  });

  test("an aborted request rejects with the abort reason", async () => {
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(client.healthz({ signal: controller.signal }), { name: "AbortError" });
  });
});

describe("events", () => {
  /** Reads events until `predicate` matches one; returns all read. */
  async function readUntil(
    events: AsyncGenerator<ReadStateEvent>,
    predicate: (e: ReadStateEvent) => boolean,
  ): Promise<ReadStateEvent[]> {
    const seen: ReadStateEvent[] = [];
    for (;;) {
      const next = await events.next();
      assert.ok(!next.done, "the stream ended");
      seen.push(next.value);
      if (predicate(next.value)) return seen;
    }
  }

  test("ready, read_state changes, resume with Last-Event-ID, resync for an unknown id", async () => {
    const [user, channel] = [freshId(), freshId()];
    const controller = new AbortController();
    const events = await client.events(user, { signal: controller.signal });
    const [ready] = await readUntil(events, (e) => e.event === "ready");
    assert.ok(ready && ready.event === "ready");
    assert.deepEqual(ready.data, { user_id: String(user) });
    assert.match(ready.id, /^[0-9a-f]+-\d+$/);

    await client.join(user, channel, { last_read_message_id: 0 });
    const join = (await readUntil(events, (e) => e.event === "read_state")).at(-1);
    assert.ok(join && join.event === "read_state");
    assert.equal(join.data.type, "join");
    assert.equal(join.data.channel_id, String(channel));
    assert.deepEqual(join.data.read_state, state({ channel_id: String(channel) }));

    await client.leave(user, channel);
    const leave = (await readUntil(events, (e) => e.event === "read_state")).at(-1);
    assert.ok(leave && leave.event === "read_state");
    assert.equal(leave.data.type, "leave");
    assert.equal(leave.data.read_state, null);
    controller.abort();
    await assert.rejects(events.next());

    // Missed changes are replayed after the Last-Event-ID (header) ...
    await client.ack(user, channel, { message_id: 5 });
    const resumed = await client.events(user, { lastEventId: join.id });
    const replay = await readUntil(resumed, (e) => e.event === "read_state" && e.data.type === "ack");
    assert.deepEqual(
      replay.map((e) => (e.event === "read_state" ? e.data.type : e.event)),
      ["ready", "leave", "ack"],
    );
    await resumed.return();

    // ... or the query parameter.
    const viaQuery = await client.events(user, { lastEventId: leave.id, resumeWith: "query" });
    const replay2 = await readUntil(viaQuery, (e) => e.event === "read_state");
    assert.deepEqual(
      replay2.map((e) => (e.event === "read_state" ? e.data.type : e.event)),
      ["ready", "ack"],
    );
    await viaQuery.return();

    // An id this server never issued cannot be resumed: resync.
    const unknown = await client.events(user, { lastEventId: "1-1" });
    const first = await unknown.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.event, "resync");
    await unknown.return();
  });

  test("an invalid user id rejects before streaming", async () => {
    const error = await problem(client.events("0"));
    assert.equal(error.status, 400);
    assert.equal(error.field, "user_id");
  });

  test("eventsWebSocketUrl", () => {
    assert.equal(
      new ReadStateClient({ baseUrl: "https://rs.example/api/" }).eventsWebSocketUrl(7, "ab-3"),
      "wss://rs.example/api/v1/users/7/events/ws?last_event_id=ab-3",
    );
    assert.equal(client.eventsWebSocketUrl(7), `ws://127.0.0.1:${server.port}/v1/users/7/events/ws`);
  });
});
