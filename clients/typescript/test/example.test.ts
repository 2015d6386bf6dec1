// examples/usage.ts (the README's example) runs against a real readstate, and the
// README shows exactly that file.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { example } from "../examples/usage.js";
import { packageRoot } from "../scripts/readstate-server.mjs";
import { startServer, type ReadstateServer } from "./helpers.js";

let server: ReadstateServer;

before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.close();
});

test("the usage example runs and prints what its comments say", async (t) => {
  const log = t.mock.method(console, "log", () => {});
  await example(server.baseUrl);
  const lines = log.mock.calls.map((call) => call.arguments);
  assert.deepEqual(lines[0], [1, 1]);
  assert.deepEqual(lines.at(-2), [{ unread_channels: 0, unread_threads: 0, mentions: 0 }]);
  assert.deepEqual(lines.at(-1), [404, "not-found"]);
  assert.ok(lines.some((args) => args[0] === "channel 10 unread:" && args[1] === 0));
});

test("the README shows examples/usage.ts verbatim", () => {
  const root = packageRoot();
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const source = readFileSync(join(root, "examples", "usage.ts"), "utf8");
  assert.ok(readme.includes("```ts\n" + source + "```"), "README.md must contain examples/usage.ts in a ```ts block");
});
