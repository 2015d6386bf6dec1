// Starts a real readstate server for the tests and for `npm run check:types`.
//
// Plain JavaScript (typed with JSDoc, checked by `tsc`) so that scripts can use it
// without a build; `tsc` also copies it to dist/scripts/ for the compiled tests.
//
// The binary is `$READSTATE_BIN`, or `../../target/debug/readstate` relative to this
// package (the Rust workspace's debug build). Each server gets its own temporary
// data directory and a free port (port 0, read back from the `listening` log line);
// it is stopped by pid (SIGTERM, then SIGKILL if it does not exit).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The directory of this package (the nearest package.json named @readstate/client). */
export function packageRoot() {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest)) {
      const name = JSON.parse(readFileSync(manifest, "utf8")).name;
      if (name === "@readstate/client") return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("package.json of @readstate/client not found above " + import.meta.url);
    dir = parent;
  }
}

/** The readstate binary: `$READSTATE_BIN` or the workspace's debug build. */
export function readstateBinary() {
  const fromEnv = process.env["READSTATE_BIN"];
  return fromEnv ? resolve(fromEnv) : resolve(packageRoot(), "../../target/debug/readstate");
}

/** @type {Set<number>} pids of servers started by this process and still running */
const running = new Set();
process.on("exit", () => {
  // Last resort when a test crashes: nothing is left behind.
  for (const pid of running) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/**
 * @typedef {object} StartOptions
 * @property {Record<string, string>} [env] extra environment (e.g. `READSTATE_EVENTS__SUBSCRIBER_BUFFER`)
 * @property {number} [port] port to listen on (default 0: a free one)
 * @property {string} [dataDir] data directory (default: a new temporary directory, removed by `close()`)
 * @property {number} [readyTimeoutMs] how long to wait for `/readyz` (default 60000)
 */

/**
 * A running readstate.
 */
export class ReadstateServer {
  /** @type {import("node:child_process").ChildProcess | undefined} */
  #child;
  /** @type {Promise<number | null> | undefined} */
  #exited;
  /** @type {string[]} */
  #log = [];
  /** @type {Record<string, string>} */
  #env;
  #ownsDataDir;
  #readyTimeoutMs;

  /**
   * @param {StartOptions} options
   */
  constructor(options = {}) {
    this.#env = options.env ?? {};
    this.#ownsDataDir = options.dataDir === undefined;
    this.dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "readstate-ts-"));
    this.port = options.port ?? 0;
    this.#readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
    this.binary = readstateBinary();
  }

  /** `http://127.0.0.1:<port>` (valid once started). */
  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** pid of the running process, if any. */
  get pid() {
    return this.#child?.pid;
  }

  /** The last lines the server logged (for error messages). */
  logTail(lines = 30) {
    return this.#log.slice(-lines).join("\n");
  }

  /** Starts the process and waits until `/readyz` answers 200. */
  async start() {
    if (this.#child) throw new Error("already started");
    if (!existsSync(this.binary)) {
      throw new Error(
        `readstate binary not found at ${this.binary}: build it with \`cargo build\` in the workspace, or set READSTATE_BIN`,
      );
    }
    // Only what this helper sets configures the server: a READSTATE_* variable of
    // the caller's (READSTATE_BIN, READSTATE_TEST_PG_URL, ...) is not a setting and
    // would make it refuse to start.
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([key]) => !key.startsWith("READSTATE_")),
    );
    const child = spawn(this.binary, ["serve"], {
      env: {
        ...inherited,
        READSTATE_HTTP__ADDR: `127.0.0.1:${this.port}`,
        READSTATE_STORAGE__URL: `sqlite://${join(this.dataDir, "rs.db")}`,
        READSTATE_LOG__FORMAT: "json",
        ...this.#env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child = child;
    if (child.pid !== undefined) running.add(child.pid);
    const pid = child.pid;
    this.#exited = new Promise((resolveExit) => {
      child.once("exit", (code, signal) => {
        if (pid !== undefined) running.delete(pid);
        this.#log.push(`[process exited: code=${code} signal=${signal}]`);
        resolveExit(code);
      });
      child.once("error", (err) => {
        if (pid !== undefined) running.delete(pid);
        this.#log.push(`[spawn error: ${err.message}]`);
        resolveExit(null);
      });
    });

    /** @type {(addr: string) => void} */
    let onListening = () => {};
    const listening = new Promise((resolveAddr) => {
      onListening = resolveAddr;
    });
    /** @param {NodeJS.ReadableStream | null} stream */
    const collect = (stream) => {
      if (!stream) return;
      let buffered = "";
      stream.setEncoding("utf8");
      stream.on("data", (/** @type {string} */ chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          this.#log.push(line);
          if (this.#log.length > 500) this.#log.splice(0, this.#log.length - 500);
          if (line.includes('"listening"')) {
            try {
              const record = JSON.parse(line);
              if (record.message === "listening" && typeof record.addr === "string") onListening(record.addr);
            } catch {
              // not JSON: ignore
            }
          }
        }
      });
    };
    collect(child.stdout);
    collect(child.stderr);

    const deadline = Date.now() + this.#readyTimeoutMs;
    const exited = this.#exited.then((code) => {
      throw new Error(`readstate exited (code ${code}) before it was ready:\n${this.logTail()}`);
    });
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`readstate did not log \`listening\` in time:\n${this.logTail()}`)),
        this.#readyTimeoutMs,
      );
    });
    try {
      const addr = /** @type {string} */ (await Promise.race([listening, exited, timeout]));
      this.port = Number(addr.slice(addr.lastIndexOf(":") + 1));
    } catch (err) {
      await this.stop();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    exited.catch(() => {});

    for (;;) {
      try {
        const res = await fetch(`${this.baseUrl}/readyz`);
        await res.arrayBuffer();
        if (res.status === 200) return this;
      } catch {
        // not answering yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`readstate did not become ready in time:\n${this.logTail()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the process by pid (SIGTERM, SIGKILL after `graceMs`); keeps the data. */
  async stop(graceMs = 15_000) {
    const child = this.#child;
    const exited = this.#exited;
    if (!child || !exited) return;
    this.#child = undefined;
    this.#exited = undefined;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, "SIGTERM");
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const killed = new Promise((r) => {
        timer = setTimeout(() => {
          if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
            try {
              process.kill(child.pid, "SIGKILL");
            } catch {
              // already gone
            }
          }
          r(undefined);
        }, graceMs);
      });
      await Promise.race([exited, killed]);
      clearTimeout(timer);
    }
    await exited;
  }

  /** Stops and starts it again on the same port and data directory. */
  async restart() {
    await this.stop();
    await this.start();
    return this;
  }

  /** Stops it and removes the data directory it created. */
  async close() {
    await this.stop();
    if (this.#ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * Starts a readstate and waits until it is ready.
 * @param {StartOptions} [options]
 */
export async function startReadstate(options = {}) {
  const server = new ReadstateServer(options);
  return server.start();
}
