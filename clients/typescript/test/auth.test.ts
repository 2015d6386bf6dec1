// Access control against real readstate processes with credentials configured:
// the `token` option (a string or a function) on every request and on the event
// stream, 401 / 403 / 429 as ReadStateError, user tokens (JWT) limited to their own
// user, a refreshed token picked up by LiveReadStates' reconnection, and the
// WebSocket URL's `?access_token=`.

import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { request } from "node:http";
import { inspect } from "node:util";
import { after, before, describe, test, type TestContext } from "node:test";

import { LiveReadStates, ReadStateClient, ReadStateError } from "../src/index.js";
import type { FetchLike, ReadStateEvent } from "../src/index.js";
import { freshId, startServer, waitUntil, type ReadstateServer } from "./helpers.js";

/** Every scope. */
const ALL_KEY = "rsk_ts_test_all_0f1e2d3c4b5a69788796a5b4c3d2e1f0";
/** `read` only. */
const READ_KEY = "rsk_ts_test_read_00112233445566778899aabbccddeeff";
const SECRET = "readstate-ts-client-tests-hs256-secret-48-bytes!";

const sha256Hex = (text: string): string => createHash("sha256").update(text).digest("hex");

/** The environment of a server with the two keys and HS256 user tokens (no leeway). */
function authEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    READSTATE_AUTH__API_KEYS: JSON.stringify([
      { name: "all", key_sha256: sha256Hex(ALL_KEY), scopes: ["read", "write", "admin"] },
      { name: "reader", key_sha256: sha256Hex(READ_KEY), scopes: ["read"] },
    ]),
    READSTATE_AUTH__JWT__HS256_SECRET: SECRET,
    READSTATE_AUTH__JWT__LEEWAY_S: "0",
    ...extra,
  };
}

/** An HS256 JWT for user `sub`, expiring `expiresInS` seconds from now. */
function jwt(sub: number, expiresInS: number, secret = SECRET): string {
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({
    sub: String(sub),
    exp: Math.floor(Date.now() / 1000) + expiresInS,
  })}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** Asserts that `promise` rejects with a ReadStateError of `status` and returns it. */
async function refused(promise: Promise<unknown>, status: number): Promise<ReadStateError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ReadStateError, `expected a ReadStateError, got ${String(error)}`);
    assert.equal(error.status, status, error.message);
    return error;
  }
  assert.fail(`expected a ${status} rejection`);
}

/** Reads events until `predicate` matches one. */
async function readUntil(
  events: AsyncGenerator<ReadStateEvent>,
  predicate: (e: ReadStateEvent) => boolean,
): Promise<ReadStateEvent> {
  for (;;) {
    const next = await events.next();
    assert.ok(!next.done, "the stream ended");
    if (predicate(next.value)) return next.value;
  }
}

/** The status of a WebSocket upgrade request to `url` (101 when accepted). */
function upgradeStatus(url: string): Promise<number> {
  const target = new URL(url.replace(/^ws/, "http"));
  return new Promise((resolve, reject) => {
    const req = request(target, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": randomBytes(16).toString("base64"),
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("access control", () => {
  let server: ReadstateServer;
  let admin: ReadStateClient;

  before(async () => {
    server = await startServer({ env: authEnv() });
    admin = new ReadStateClient({ baseUrl: server.baseUrl, token: ALL_KEY });
  });
  after(async () => {
    await server?.close();
  });

  test("without a token, or with one the server does not accept: 401 unauthorized", async () => {
    const [user, channel] = [freshId(), freshId()];
    const anonymous = new ReadStateClient({ baseUrl: server.baseUrl });
    for (const call of [
      () => anonymous.summary(user),
      () => anonymous.ack(user, channel, { message_id: 1 }),
      () => anonymous.batch([{ op: "join", user_id: user, channel_id: channel }]),
      () => anonymous.events(user),
    ]) {
      const error = await refused(call(), 401);
      assert.equal(error.kind, "unauthorized");
      assert.equal(error.type, "https://readstate.dev/problems/unauthorized");
    }
    // Public routes stay open.
    assert.deepEqual(await anonymous.readyz(), { status: "ready" });

    const forged = jwt(user, 600, "another-secret-that-is-long-enough-for-hs256");
    for (const token of ["rsk_ts_unknown_key_0123456789abcdef", forged, jwt(user, -60)]) {
      const client = new ReadStateClient({ baseUrl: server.baseUrl, token });
      const error = await refused(client.summary(user), 401);
      assert.equal(error.kind, "unauthorized");
      assert.ok(!error.message.includes(token) && !JSON.stringify(error.problem).includes(token));
      await refused(client.events(user), 401);
    }
  });

  test("an API key works for every request and the event stream", async () => {
    const [user, author, channel] = [freshId(), freshId(), freshId()];
    const controller = new AbortController();
    const events = await admin.events(user, { signal: controller.signal });
    await readUntil(events, (e) => e.event === "ready");

    await admin.join(user, channel, { last_read_message_id: 0 });
    await admin.createMessage(channel, { message_id: 5, author_id: author, mentions: [user] });
    const results = await admin.batch([{ op: "ack", user_id: user, channel_id: channel, message_id: 5 }]);
    assert.deepEqual(results.results, [{ ok: true }]);
    const acked = await readUntil(events, (e) => e.event === "read_state" && e.data.type === "ack");
    assert.ok(acked.event === "read_state");
    assert.equal(acked.data.read_state?.last_read_message_id, "5");
    controller.abort();
    await events.return();

    // The admin scope; the monitoring page behind the read scope.
    await admin.deleteChannel(channel);
    assert.match(await admin.metrics(), /readstate_auth_denied_total/);
  });

  test("a key without the scope: 403 forbidden", async () => {
    const [user, channel] = [freshId(), freshId()];
    await admin.join(user, channel, { last_read_message_id: 0 });
    const reader = new ReadStateClient({ baseUrl: server.baseUrl, token: READ_KEY });
    assert.equal((await reader.getReadState(user, channel)).last_read_message_id, "0");
    const error = await refused(reader.ack(user, channel, { message_id: 1 }), 403);
    assert.equal(error.kind, "forbidden");
    assert.match(error.detail, /write/);
    await refused(reader.deleteChannel(channel), 403);
    // Per-call headers win over the client's token.
    const asReader = { headers: { authorization: `Bearer ${READ_KEY}` } };
    await refused(admin.ack(user, channel, { message_id: 1 }, asReader), 403);
  });

  test("a user's JWT may act for its own user only", async () => {
    const [user, other, author, channel] = [freshId(), freshId(), freshId(), freshId()];
    for (const u of [user, other]) await admin.join(u, channel, { last_read_message_id: 0 });
    await admin.createMessage(channel, { message_id: 9, author_id: author, mentions: [user, other] });

    const own = new ReadStateClient({ baseUrl: server.baseUrl, token: jwt(user, 600) });
    const controller = new AbortController();
    const events = await own.events(user, { signal: controller.signal });
    await readUntil(events, (e) => e.event === "ready");
    assert.equal((await own.ack(user, channel, { message_id: 9 })).has_unread, false);
    await readUntil(events, (e) => e.event === "read_state" && e.data.type === "ack");
    controller.abort();
    await events.return();
    assert.deepEqual(await own.summary(user), { unread_channels: 0, unread_threads: 0, mentions: 0 });

    assert.equal((await refused(own.ack(other, channel, { message_id: 9 }), 403)).kind, "forbidden");
    await refused(own.events(other), 403);
    await refused(own.summary(other), 403);
    // What only services do, even for itself.
    await refused(own.join(user, freshId()), 403);
    await refused(own.createMessage(channel, { message_id: 10, author_id: user }), 403);
    // The other user's state is untouched.
    assert.equal((await admin.getReadState(other, channel)).last_read_message_id, "0");
  });

  test("a token function is called for every request, and may be async", async () => {
    const seen: (string | null)[] = [];
    const recording: FetchLike = (input, init) => {
      seen.push(new Headers(init.headers).get("authorization"));
      return fetch(input, init);
    };
    let calls = 0;
    const client = new ReadStateClient({
      baseUrl: server.baseUrl,
      fetch: recording,
      headers: { authorization: "Bearer overridden" },
      token: async () => {
        calls++;
        await new Promise((resolve) => setTimeout(resolve, 1));
        return ALL_KEY;
      },
    });
    await client.summary(freshId());
    await client.join(freshId(), freshId());
    assert.equal(calls, 2);
    assert.deepEqual(seen, [`Bearer ${ALL_KEY}`, `Bearer ${ALL_KEY}`]);

    // A function answering nothing sends nothing.
    const none = new ReadStateClient({ baseUrl: server.baseUrl, token: () => undefined });
    await refused(none.summary(freshId()), 401);
  });

  test("tokens that cannot be sent fail before anything is sent, without showing them", async () => {
    for (const bad of ["", "   ", "Bearer rsk_abc", "two words", "caf\u00e9", "a\nb"]) {
      assert.throws(
        () => new ReadStateClient({ baseUrl: server.baseUrl, token: bad }),
        (error: unknown) => error instanceof TypeError && (bad.trim() === "" || !error.message.includes(bad.trim())),
      );
      const lazy = new ReadStateClient({ baseUrl: server.baseUrl, token: () => `${bad}!` });
      if (bad.trim() !== "") await assert.rejects(lazy.summary(1), TypeError);
    }
    // Surrounding whitespace (a key read from a file) is trimmed.
    const trimmed = new ReadStateClient({ baseUrl: server.baseUrl, token: `${ALL_KEY}\n` });
    await trimmed.summary(freshId());
    // The token is not shown by inspecting the client.
    assert.ok(!inspect(trimmed, { depth: 5, showHidden: true }).includes(ALL_KEY));
  });

  test("the WebSocket URL carries the token as ?access_token=", async () => {
    const user = freshId();
    const token = jwt(user, 600);
    const url = admin.eventsWebSocketUrl(user, undefined, token);
    assert.equal(new URL(url).searchParams.get("access_token"), token);
    assert.equal(await upgradeStatus(url), 101);
    assert.equal(await upgradeStatus(admin.eventsWebSocketUrl(user)), 401);
    assert.equal(await upgradeStatus(admin.eventsWebSocketUrl(freshId(), undefined, token)), 403);
    assert.throws(() => admin.eventsWebSocketUrl(user, undefined, "two words"), TypeError);
  });
});

describe("LiveReadStates with a refreshed token", () => {
  let server: ReadstateServer;

  before(async () => {
    server = await startServer({ env: authEnv() });
  });
  after(async () => {
    await server?.close();
  });

  function track(t: TestContext, live: LiveReadStates): LiveReadStates {
    t.after(() => live.stop());
    return live;
  }

  test("start() rejects with 401 without a valid token, 403 for another user", async (t) => {
    const user = freshId();
    const anonymous = new ReadStateClient({ baseUrl: server.baseUrl });
    const live = track(t, new LiveReadStates({ client: anonymous, userId: user }));
    assert.equal((await refused(live.start(), 401)).kind, "unauthorized");
    const other = new ReadStateClient({ baseUrl: server.baseUrl, token: jwt(freshId(), 600) });
    const denied = track(t, new LiveReadStates({ client: other, userId: user }));
    await refused(denied.start(), 403);
  });

  test("reconnects after a restart with the token the function answers then", async (t) => {
    const [user, author, channel] = [freshId(), freshId(), freshId()];
    const admin = new ReadStateClient({ baseUrl: server.baseUrl, token: ALL_KEY });
    await admin.join(user, channel, { last_read_message_id: 0 });

    // A token that expires in 3 s (the server allows no leeway), replaced while the
    // server is down.
    let current = jwt(user, 3);
    const client = new ReadStateClient({ baseUrl: server.baseUrl, token: () => current });
    const errors: unknown[] = [];
    const live = track(
      t,
      new LiveReadStates({
        client,
        userId: user,
        backoff: { initialMs: 50, maxMs: 300 },
        onError: (e) => errors.push(e),
      }),
    );
    await live.start();
    assert.equal(live.get(channel)?.last_read_message_id, "0");

    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 4500));
    const expired = current;
    current = jwt(user, 600);
    await server.start();
    // The first token would now be refused.
    await refused(new ReadStateClient({ baseUrl: server.baseUrl, token: expired }).summary(user), 401);

    await admin.createMessage(channel, { message_id: 3, author_id: author, mentions: [user] });
    await waitUntil(
      () => live.stats.resyncs >= 1 && live.get(channel)?.mention_count === 1,
      () => `a resync and the mention: ${JSON.stringify(live.stats)}`,
    );
    assert.ok(
      errors.every((e) => !(e instanceof ReadStateError && e.status === 401)),
      "never refused: the reconnections sent the fresh token",
    );
  });
});

describe("rate limit", () => {
  let server: ReadstateServer;

  before(async () => {
    server = await startServer({
      env: authEnv({ READSTATE_LIMITS__PER_CALLER_RPS: "1", READSTATE_LIMITS__PER_CALLER_BURST: "1" }),
    });
  });
  after(async () => {
    await server?.close();
  });

  test("429 too-many-requests carries retryAfter; after it the call succeeds", async () => {
    const user = freshId();
    const client = new ReadStateClient({ baseUrl: server.baseUrl, token: ALL_KEY });
    await client.summary(user);
    const error = await refused(client.summary(user), 429);
    assert.equal(error.kind, "too-many-requests");
    assert.ok(error.retryAfter !== undefined && error.retryAfter >= 1, `retryAfter: ${error.retryAfter}`);
    await new Promise((resolve) => setTimeout(resolve, error.retryAfter! * 1000));
    assert.deepEqual(await client.summary(user), { unread_channels: 0, unread_threads: 0, mentions: 0 });
  });
});
