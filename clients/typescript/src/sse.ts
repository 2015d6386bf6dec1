/**
 * A Server-Sent Events parser (the `text/event-stream` format of the WHATWG HTML
 * standard) over `fetch` + `ReadableStream`, so that it runs in Node 20 (which has
 * no `EventSource`) and in browsers, and so that the caller controls the request
 * (`Last-Event-ID`, authorization headers).
 */

/** One dispatched event. */
export interface SseMessage {
  /** The `event:` field, `message` when absent. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last event id at dispatch (the `id:` field of this or an earlier event; `""` if none). */
  id: string;
  /** The `retry:` field of this event, in ms, when it had one. */
  retry?: number;
}

/**
 * Incremental parser: feed it decoded text with {@link SseParser.push}; it returns
 * the events completed by that text. Lines may end with CRLF, LF or CR, split
 * anywhere across chunks.
 */
export class SseParser {
  #line = "";
  #afterCR = false;
  #started = false;
  #data: string[] = [];
  #hasData = false;
  #event = "";
  #lastId = "";
  #retry: number | undefined;

  /** The last event id seen so far (persists across events, as in `EventSource`). */
  get lastEventId(): string {
    return this.#lastId;
  }

  /** Parses `chunk` and returns the events it completed. */
  push(chunk: string): SseMessage[] {
    const out: SseMessage[] = [];
    let text = chunk;
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x0a /* \n */) {
        if (this.#afterCR) {
          // The LF of a CRLF whose CR ended the line already.
          this.#afterCR = false;
          start = i + 1;
          continue;
        }
        this.#line += text.slice(start, i);
        this.#endLine(out);
        start = i + 1;
      } else if (c === 0x0d /* \r */) {
        this.#afterCR = false;
        this.#line += text.slice(start, i);
        this.#endLine(out);
        this.#afterCR = true;
        start = i + 1;
      } else {
        this.#afterCR = false;
      }
    }
    this.#line += text.slice(start);
    return out;
  }

  #endLine(out: SseMessage[]): void {
    const line = this.#line;
    this.#line = "";
    if (line === "") {
      this.#dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 0x3a /* : */) return; // comment (heartbeat)
    const colon = line.indexOf(":");
    let field: string;
    let value: string;
    if (colon < 0) {
      field = line;
      value = "";
    } else {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 0x20 /* space */) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.#event = value;
        break;
      case "data":
        this.#data.push(value);
        this.#hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) this.#lastId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.#retry = Number(value);
        break;
      default:
        // unknown fields are ignored
        break;
    }
  }

  #dispatch(out: SseMessage[]): void {
    const event = this.#event;
    const hasData = this.#hasData;
    const data = this.#data.join("\n");
    const retry = this.#retry;
    this.#event = "";
    this.#data = [];
    this.#hasData = false;
    this.#retry = undefined;
    if (!hasData) return;
    const message: SseMessage = { event: event === "" ? "message" : event, data, id: this.#lastId };
    if (retry !== undefined) message.retry = retry;
    out.push(message);
  }
}

/** Options of {@link readSse}. */
export interface ReadSseOptions {
  /** Called for every chunk of bytes received (heartbeats included): a liveness signal. */
  onActivity?: () => void;
}

/**
 * The events of a `text/event-stream` body, in order. Ends when the stream ends
 * (an incomplete trailing event is dropped, as the standard says); cancels the
 * stream when the consumer stops early.
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  options: ReadSseOptions = {},
): AsyncGenerator<SseMessage, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser();
  let done = false;
  try {
    for (;;) {
      const result = await reader.read();
      if (result.done) {
        done = true;
        for (const message of parser.push(decoder.decode())) yield message;
        return;
      }
      options.onActivity?.();
      for (const message of parser.push(decoder.decode(result.value, { stream: true }))) yield message;
    }
  } finally {
    if (!done) {
      // The consumer stopped early or reading failed: release the connection.
      await reader.cancel().catch(() => {});
    }
    try {
      reader.releaseLock();
    } catch {
      // already released
    }
  }
}
