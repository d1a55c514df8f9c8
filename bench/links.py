"""Link checking: 300 unique links checked concurrently, against the slowest link and the sum.

    .venv/bin/python bench/links.py
    .venv/bin/python bench/links.py --links 300 --workers 16 --per-host 4   # the defaults' limits

A local threaded HTTP server on 127.0.0.1 (allowlisted) serves four kinds of link:
- slow: 200 after 0.2 to 1.0 s;
- redirecting: 1 to 3 redirects, then a 200;
- missing: 404 (HEAD, then GET, since some servers answer HEAD wrongly);
- rate-limited: 429 with Retry-After: 1 on the first request, then 200 (the one retry).

Every link is unique, so nothing is deduplicated or cached. Figures, in the same run:
- wall: check_links() over all links;
- slowest link: the largest per-link time in that run, and the same URL checked alone afterwards
  (a fresh copy, so the rate limit applies again);
- sequential baseline: the sum of all per-link times (requests and retry waits, not queueing).
All links share one host, so --per-host bounds the concurrency as much as --workers does.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.links import LinkCheckOptions, LinkResult, check_links

KINDS = ("slow", "redirect", "missing", "limited")
SHARE = {"slow": 0.4, "redirect": 0.2, "missing": 0.2, "limited": 0.2}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by method
        self.seen: Counter[str] = Counter()  # by full path, for the first-request-only 429

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(send_body=False)

    def do_GET(self) -> None:
        self.answer(send_body=True)

    def answer(self, send_body: bool) -> None:
        with self.server.lock:
            self.server.requests[self.command] += 1
            self.server.seen[self.path] += 1
            first = self.server.seen[self.path] == 1
        status, headers = self.route(first)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        body = b"ok" if status == 200 else b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def route(self, first: bool) -> tuple[int, dict[str, str]]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        kind = parts.path.strip("/").split("/")[0]
        if kind == "slow":
            time.sleep(float(query["delay"][0]))
            return 200, {}
        if kind == "redirect":
            hops = int(query["hops"][0])
            if hops == 0:
                return 200, {}
            return 302, {"Location": f"{parts.path}?hops={hops - 1}"}
        if kind == "limited" and first:
            return 429, {"Retry-After": "1"}
        return (200, {}) if kind == "limited" else (404, {})


def make_links(base: str, n: int) -> tuple[list[str], Counter[str]]:
    kinds = Counter({kind: int(n * SHARE[kind]) for kind in KINDS})
    kinds["slow"] += n - sum(kinds.values())
    links = []
    for kind, count in kinds.items():
        for i in range(count):
            if kind == "slow":
                links.append(f"{base}/slow/{i}?delay={0.2 + 0.8 * (i % 9) / 8:.1f}")
            elif kind == "redirect":
                links.append(f"{base}/redirect/{i}?hops={1 + i % 3}")
            else:
                links.append(f"{base}/{kind}/{i}")
    return links, kinds


def summary(results: list[LinkResult]) -> str:
    statuses = Counter(result.status.value for result in results)
    return ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=300)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=64)
    args = parser.parse_args()
    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = LinkCheckOptions(timeout=5.0, max_workers=args.workers, per_host=args.per_host,
                               allow_hosts=("127.0.0.1",))
    links, kinds = make_links(server.base, args.links)

    started = time.perf_counter()
    results = check_links(links, options=options)
    wall = time.perf_counter() - started

    slowest = max(results, key=lambda result: result.elapsed)
    sequential = sum(result.elapsed for result in results)
    separator = "&" if "?" in slowest.url else "?"
    alone = check_links([f"{slowest.url}{separator}alone=1"], options=options)[0]
    server.shutdown()

    print(f"{len(results)} unique links: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
          + f"; {args.workers} workers, {args.per_host} per host")
    print(f"results: {summary(results)}; requests: "
          + ", ".join(f"{m} {n}" for m, n in sorted(server.requests.items())))
    print(f"wall time:                       {wall:7.2f} s")
    print(f"slowest link, in the run:        {slowest.elapsed:7.2f} s   "
          f"wall / slowest {wall / slowest.elapsed:5.2f}x   ({slowest.url})")
    print(f"slowest link, alone:             {alone.elapsed:7.2f} s   "
          f"wall / alone   {wall / alone.elapsed:5.2f}x")
    print(f"sum of link times (sequential):  {sequential:7.2f} s   "
          f"sum / wall     {sequential / wall:5.1f}x")


if __name__ == "__main__":
    main()
