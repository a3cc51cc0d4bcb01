// Server-sent events over fetch(): EventSource cannot send an Authorization header, fetch can. The parser follows
// the HTML "event stream" interpretation rules: lines end with CRLF, LF or CR; "field: value" lines; a line
// starting with ":" is a comment (keep-alive); a blank line dispatches the event (when it has data).

export class StreamError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastEventId = "";
    this.reset();
  }

  reset() {
    this.type = "";
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i === this.buffer.length - 1) break; // maybe half of a CRLF: wait for the next chunk
      this.line(this.buffer.slice(start, i));
      if (c === "\r" && this.buffer[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.id !== null) this.lastEventId = this.id;
      if (this.data.length) {
        this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

// Reads ``url`` until the server closes the stream (resolves with the last event id) or ``signal`` aborts.
// Rejects with StreamError(status) when the answer is not a 2xx event stream.
export async function readEventStream(url, { headers = {}, lastEventId = "", signal, onEvent, onOpen } = {}) {
  const h = { ...headers, Accept: "text/event-stream" };
  if (lastEventId) h["Last-Event-ID"] = lastEventId;
  const response = await fetch(url, { headers: h, signal, cache: "no-store" });
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream") || !response.body) {
    let detail = "";
    try {
      const body = await response.json();
      detail = body.detail || body.title || "";
    } catch {
      /* not JSON */
    }
    throw new StreamError(response.ok ? 415 : response.status, detail);
  }
  if (onOpen) onOpen();
  const parser = new SSEParser(onEvent);
  parser.lastEventId = lastEventId;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return parser.lastEventId;
}
