"""`avel live --html PORT`: a live page on http://127.0.0.1:PORT (loopback only): the report's
timeline, a cell a second coloured by its label, growing as the stream plays, the stream's
current second, and the events so far. The page polls `/records?since=N` (JSON: the records
after the N-th, and the next N) twice a second; the server is http.server in a thread.
The last MAX_RECORDS records are kept (a page opened late sees the last two hours).
At the end of the stream the page stops polling once it has the `ended` record, and the
command's `close(linger_s=...)` keeps serving until a page has fetched every record (at most
LINGER_S), so the page shows the end rather than a server gone."""

from __future__ import annotations

import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from ...core import jsonio
from ...core.errors import ConfigError

MAX_RECORDS = 7200 * 3
LINGER_S = 3.0  # how long the end waits for a polling page to fetch the last records (it polls every 0.5 s)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>avel live: __NAME__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; }
#timeline { display: flex; flex-wrap: wrap; gap: 1px; margin: 1em 0; }
#timeline div { width: 10px; height: 28px; background: #ddd; }
#timeline div.dropped { background: repeating-linear-gradient(45deg, #fff, #fff 2px, #c00 2px, #c00 4px); }
#now { font-weight: bold; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: left; }
</style></head>
<body>
<h1>avel live</h1>
<p>source: <code>__NAME__</code> &middot; current second: <span id="now">-</span> &middot;
delay: <span id="delay">-</span> s &middot; <span id="state">playing</span></p>
<div id="timeline"></div>
<table><thead><tr><th>from (s)</th><th>to (s)</th><th>label</th><th>score</th></tr></thead><tbody id="events"></tbody></table>
<script>
const colours = {};
function colour(label) {
  if (label === "background") return "#ddd";
  if (!(label in colours)) colours[label] = `hsl(${(Object.keys(colours).length * 137) % 360} 70% 50%)`;
  return colours[label];
}
let since = 0;
const cells = {};
function cell(t) {
  if (!(t in cells)) { const d = document.createElement("div"); document.getElementById("timeline").appendChild(d); cells[t] = d; }
  return cells[t];
}
async function poll() {
  try {
    const r = await fetch(`/records?since=${since}`);
    const data = await r.json();
    since = data.next;
    for (const rec of data.records) {
      if (rec.type === "second" || rec.type === "revision") {
        const d = cell(rec.t); d.style.background = colour(rec.label);
        d.title = `${rec.t} s: ${rec.label} (${rec.probability})`; d.dataset.label = rec.label;
        if (rec.type === "second") { document.getElementById("now").textContent = rec.t; document.getElementById("delay").textContent = rec.delay_s; }
      } else if (rec.type === "dropped") { cell(rec.t).className = "dropped"; }
      else if (rec.type === "event_end") {
        const row = document.createElement("tr");
        for (const x of [rec.start_s, rec.end_s, rec.label, rec.score]) row.insertCell().textContent = x;  // text, never markup
        document.getElementById("events").appendChild(row);
      } else if (rec.type === "stream") {
        document.getElementById("state").textContent = rec.kind === "resumed" ? "playing" : rec.message;
        if (rec.kind === "ended") return;  // the last record: the server stops once it is served
      }
    }
  } catch (e) { document.getElementById("state").textContent = "server gone"; return; }
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""


class LivePage:
    """Serves the page and the records on 127.0.0.1:`port` (0: a free port) until `close`."""

    def __init__(self, port: int, name: str) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError("html", port, "must be a port number (0..65535; 0: any free port)")
        self._records: deque[dict] = deque(maxlen=MAX_RECORDS)
        self._first = 0  # the index of _records[0] among all records
        self._lock = threading.Condition()
        self._served: int | None = None  # the `next` of the latest poll (None: no page has polled)
        page = PAGE.replace("__NAME__", _escape(name)).encode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/":
                    self._send(200, "text/html; charset=utf-8", page)
                elif url.path == "/records":
                    try:
                        since = int(parse_qs(url.query).get("since", ["0"])[0])
                    except ValueError:
                        since = 0
                    self._send(200, "application/json", jsonio.dumps(outer.records(since)).encode())
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # quiet: stdout carries the JSON lines
                pass

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as e:
            raise ConfigError("html", port, f"cannot serve on 127.0.0.1:{port} ({e.strerror})") from None
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="avel-live-page", daemon=True)
        self._thread.start()

    def add(self, record: dict) -> None:
        with self._lock:
            if len(self._records) == self._records.maxlen:
                self._first += 1
            self._records.append(record)

    def records(self, since: int) -> dict:
        with self._lock:
            start = max(since - self._first, 0)
            out = [self._records[i] for i in range(start, len(self._records))]
            self._served = self._first + len(self._records)
            self._lock.notify_all()
            return {"records": out, "next": self._served}

    def close(self, linger_s: float = 0.0) -> None:
        """Stop serving; with `linger_s`, first wait (that long at most) until a page that
        has polled has fetched every record."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._served is None or self._served == self._first + len(self._records), timeout=linger_s
            )
        self.server.shutdown()
        self.server.server_close()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
