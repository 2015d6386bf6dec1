// The SSE parser on its own (no server): line endings, chunk boundaries, comments,
// multi-line data, ids.

import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser, readSse } from "../src/index.js";
import type { SseMessage } from "../src/index.js";

const SAMPLE =
  ": heartbeat\n" +
  "event: ready\nid: ab-1\ndata: {\"user_id\":\"2\"}\n\n" +
  "event: read_state\r\nid: ab-2\r\ndata: line one\r\ndata:line two\r\n\r\n" +
  "data: no event name\rid\r\r" +
  "event: ignored-without-data\nid: ab-9\n\n" +
  "retry: 1500\nfield-without-colon\ndata\n\n" +
  "data: incomplete at the end";

const EXPECTED: SseMessage[] = [
  { event: "ready", id: "ab-1", data: '{"user_id":"2"}' },
  { event: "read_state", id: "ab-2", data: "line one\nline two" },
  { event: "message", id: "", data: "no event name" },
  { event: "message", id: "ab-9", data: "", retry: 1500 },
];

test("parses a whole stream", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push(SAMPLE), EXPECTED);
  assert.equal(parser.lastEventId, "ab-9");
});

test("any split into chunks gives the same events", () => {
  for (let size = 1; size <= 7; size++) {
    const parser = new SseParser();
    const events: SseMessage[] = [];
    for (let i = 0; i < SAMPLE.length; i += size) events.push(...parser.push(SAMPLE.slice(i, i + size)));
    assert.deepEqual(events, EXPECTED, `chunks of ${size}`);
  }
  // Every two-way split, CRLF split in the middle included.
  for (let cut = 0; cut <= SAMPLE.length; cut++) {
    const parser = new SseParser();
    assert.deepEqual([...parser.push(SAMPLE.slice(0, cut)), ...parser.push(SAMPLE.slice(cut))], EXPECTED, `cut at ${cut}`);
  }
});

test("a leading byte order mark is skipped; an id with NUL is ignored", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("\ufeffdata: x\nid: a\0b\n\n"), [{ event: "message", id: "", data: "x" }]);
});

test("readSse decodes UTF-8 split across chunks and cancels the body when left early", async () => {
  const bytes = new TextEncoder().encode("event: read_state\ndata: é😀\n\nevent: ready\ndata: {}\n\n");
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
    },
    cancel() {
      cancelled = true;
    },
  });
  let activity = 0;
  const events = readSse(body, { onActivity: () => activity++ });
  const first = await events.next();
  assert.deepEqual(first.value, { event: "read_state", id: "", data: "é😀" });
  await events.return();
  assert.ok(cancelled);
  assert.ok(activity > 0);
});

test("readSse ends with the stream, dropping an incomplete event", async () => {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("data: a\n\ndata: b"));
      controller.close();
    },
  });
  const all: SseMessage[] = [];
  for await (const message of readSse(body)) all.push(message);
  assert.deepEqual(all, [{ event: "message", id: "", data: "a" }]);
});
