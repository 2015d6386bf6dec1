import type { Problem } from "./types.js";

/**
 * An error answer of readstate: the RFC 9457 problem body (`type`, `title`,
 * `status`, `detail`, `field` where one applies) and, on 429 and 503, `retryAfter`.
 *
 * With access control on: 401 `unauthorized` (no token, or one the server does not
 * accept: unknown API key, bad or expired JWT), 403 `forbidden` (a valid token
 * that may not do this: a key without the scope, a user's JWT on another user),
 * 429 `too-many-requests` (this caller is over its rate; wait `retryAfter`).
 *
 * Network failures are not wrapped: they reject with what `fetch` throws
 * (a `TypeError` in Node and browsers; an `AbortError` `DOMException` when the
 * request's signal aborted).
 */
export class ReadStateError extends Error {
  /** A URI naming the kind, e.g. `https://readstate.dev/problems/invalid-input`. */
  readonly type: string;
  /** A short summary of the kind. */
  readonly title: string;
  /** The HTTP status code. */
  readonly status: number;
  /** What happened in this occurrence. */
  readonly detail: string;
  /** The offending input, where one applies: the field of an `invalid-input` (`user_id`, `ops[1].channel_id`), `body` on 413, `content-type` on 415. */
  readonly field: string | undefined;
  /** Seconds to wait before retrying (from `Retry-After`, sent with every 429 and 503). */
  readonly retryAfter: number | undefined;
  /** The problem body as received (or built from a non-problem answer). */
  readonly problem: Problem;

  constructor(problem: Problem, retryAfter?: number) {
    super(`${problem.status} ${problem.title}: ${problem.detail}`);
    this.name = "ReadStateError";
    this.problem = problem;
    this.type = problem.type;
    this.title = problem.title;
    this.status = problem.status;
    this.detail = problem.detail;
    this.field = problem.field ?? undefined;
    this.retryAfter = retryAfter;
  }

  /**
   * The last path segment of `type`: `invalid-input`, `not-found`, `overloaded`,
   * `unauthorized`, `forbidden`, `too-many-requests`, ...
   */
  get kind(): string {
    return this.type.slice(this.type.lastIndexOf("/") + 1);
  }
}

/** Seconds from a `Retry-After` header (delta-seconds or an HTTP date); `undefined` if absent or invalid. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v["type"] === "string" &&
    typeof v["title"] === "string" &&
    typeof v["status"] === "number" &&
    typeof v["detail"] === "string"
  );
}

/**
 * The error of a non-2xx answer. The body is read: a problem body is used as is;
 * anything else (a proxy's HTML page, ...) becomes a problem of type `about:blank`.
 */
export async function errorFromResponse(res: Response): Promise<ReadStateError> {
  const retryAfter = parseRetryAfter(res.headers.get("retry-after"));
  let text = "";
  try {
    text = await res.text();
  } catch {
    // body unreadable: keep the status alone
  }
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (isProblem(parsed)) return new ReadStateError(parsed, retryAfter);
  return new ReadStateError(
    {
      type: "about:blank",
      title: res.statusText || `HTTP ${res.status}`,
      status: res.status,
      detail: text.slice(0, 500) || `HTTP ${res.status} without a problem body`,
    },
    retryAfter,
  );
}
