// Shared test helpers: a real readstate per test file, unique ids, polling.

import { ReadstateServer } from "../scripts/readstate-server.mjs";
import type { StartOptions } from "../scripts/readstate-server.mjs";

export { ReadstateServer };

/** Starts a readstate (temporary data dir, free port); `close()` it at the end. */
export async function startServer(options: StartOptions = {}): Promise<ReadstateServer> {
  const server = new ReadstateServer(options);
  await server.start();
  return server;
}

let nextId = 1000;
/** A fresh id for this test file (users, channels and messages never collide). */
export function freshId(): number {
  nextId += 1;
  return nextId;
}

/**
 * Polls `condition` until it holds (returns true), or fails after a generous
 * deadline with `describe()`'s message. No timing is asserted: the deadline only
 * keeps a broken run from hanging.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  describe: () => string = () => "condition",
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
