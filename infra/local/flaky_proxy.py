"""A loopback HTTP reverse proxy that injects transient faults, to test the pipeline's retries for real.

Put it in front of the local STAC API or S3 endpoint (point ``--stac-url`` or ``AWS_ENDPOINT_URL`` /
``AWS_S3_ENDPOINT`` at it): it forwards every request unchanged, except that a fixed fraction of the distinct
requests fail on their first try, half with ``503 Service Unavailable`` and half with the connection closed
before any answer. Which requests fail is a function of the request (method, path, query, range, body), not of
timing or order, and each fails once: a client that retries gets its answer, one that does not fails, so the
same run fails or passes the same way every time.

    with FlakyProxy("http://127.0.0.1:8081", fail_fraction=0.1) as proxy:
        ...  # use proxy.url
        proxy.faults  # {"503": n, "drop": m}

``python -m infra.local.flaky_proxy --upstream URL [--port P] [--fail-fraction 0.1]`` serves in the
foreground.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from infra.local._common import free_port

#: Request headers not forwarded (hop-by-hop; the proxy sets its own framing on each side).
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


class FlakyProxy:
    """A threaded reverse proxy on 127.0.0.1 with deterministic one-shot faults (see the module docstring).

    Attributes:
        url: ``http://127.0.0.1:PORT`` once started.
        faults: counts of injected faults, by kind ("503", "drop").
        requests: requests received (faulted ones included).
    """

    def __init__(self, upstream: str, *, fail_fraction: float = 0.1, port: int | None = None) -> None:
        if not 0.0 <= fail_fraction < 1.0:
            raise ValueError(f"fail_fraction {fail_fraction} must be in [0, 1)")
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream {upstream!r} must be an http:// URL")
        self.upstream = (parts.hostname, parts.port or 80)
        self.fail_fraction = fail_fraction
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults: dict[str, int] = {"503": 0, "drop": 0}
        self.requests = 0
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _fault_for(self, signature: str) -> str | None:
        """The fault to inject for this request ("503", "drop"), or None to forward it."""
        digest = int.from_bytes(hashlib.sha256(signature.encode()).digest()[:8], "big")
        if (digest % 10_000) >= self.fail_fraction * 10_000:
            return None
        with self._lock:
            if signature in self._failed:  # each request fails once: a retry gets through
                return None
            self._failed.add(signature)
            kind = "503" if (digest >> 20) % 2 == 0 else "drop"
            self.faults[kind] += 1
            return kind

    def start(self) -> FlakyProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read the counters instead
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = b""  # forwarded as received: chunk framing and any trailers intact
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:  # trailers, then the empty line
                                trailer = self.rfile.readline()
                                raw += trailer
                                if trailer in (b"\r\n", b"\n", b""):
                                    return raw
                        raw += self.rfile.read(size + 2)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.requests += 1
                signature = "|".join(
                    (self.command, self.path, self.headers.get("Range", ""), hashlib.sha256(body).hexdigest())
                )
                fault = proxy._fault_for(signature)
                if fault == "drop":
                    self.close_connection = True
                    return  # no answer at all: the client sees the connection close
                if fault == "503":
                    payload = b"<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for key, value in resp.getheaders():
                        if key.lower() not in _HOP_HEADERS | {"transfer-encoding", "content-length"}:
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        length = resp.getheader("Content-Length")
                        if length is not None:
                            self.send_header("Content-Length", length)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="flaky-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.local.flaky_proxy", description=__doc__.splitlines()[0])
    p.add_argument(
        "--upstream", required=True, help="http://host:port of the service to put faults in front of"
    )
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--fail-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    proxy = FlakyProxy(args.upstream, fail_fraction=args.fail_fraction, port=args.port).start()
    print(proxy.url, flush=True)
    try:
        assert proxy._thread is not None
        proxy._thread.join()
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
