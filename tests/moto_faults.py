"""A moto server that misbehaves on request, as S3 does under load: 503 SlowDown, dropped connections.

The faults are injected in front of moto's WSGI app, so every client (botocore, aiobotocore under
s3fs) meets them on the wire and its own retry logic is what is tested. A plain module (not a
conftest) so that test files in any folder can import it.
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from moto_emr import free_port

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b'<Message>Please reduce your request rate.</Message><RequestId>fault</RequestId></Error>')


@dataclass
class Fault:
    kind: str  # "slowdown" (HTTP 503 SlowDown) or "drop" (connection closed before any response)
    method: str  # HTTP method: GET (object read or listing), PUT (write), HEAD
    path_contains: str  # a piece of the request path (bucket/key) or query (list-type=2: a listing)
    times: int  # how many matching requests get the fault; -1: every one
    served: int = 0


@dataclass
class FaultInjector:
    """WSGI middleware: the next requests matching a fault get it; the rest reach moto."""

    app: object
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query) of every request
    response_bytes: list[int] = field(default_factory=list)  # the body size of each response moto gave
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, kind: str, method: str, path_contains: str, times: int = 1) -> Fault:
        fault = Fault(kind, method, path_contains, times)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            self.response_bytes.clear()

    def _due(self, method: str, target: str) -> Fault | None:
        with self.lock:
            self.requests.append((method, target))
            for fault in self.faults:
                if fault.method == method and fault.path_contains in target and fault.times != fault.served:
                    fault.served += 1
                    return fault
        return None

    def __call__(self, environ, start_response):
        from urllib.parse import unquote

        target = unquote(environ.get("PATH_INFO", "")) + "?" + environ.get("QUERY_STRING", "")
        fault = self._due(environ["REQUEST_METHOD"], target)
        if fault is None:
            body = list(self.app(environ, start_response))
            with self.lock:
                self.response_bytes.append(sum(len(chunk) for chunk in body))
            return body
        if fault.kind == "slowdown":
            start_response("503 Slow Down", [("Content-Type", "application/xml"),
                                              ("Content-Length", str(len(SLOWDOWN_BODY)))])
            return [SLOWDOWN_BODY]
        # The peer vanishes mid-request: the client reads a closed connection, no HTTP response.
        # (werkzeug then fails to write its response to the shut socket and drops it quietly)
        environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        start_response("500 Dropped", [])
        return []


@contextmanager
def faulty_moto_server():
    """(endpoint, injector) of a moto server on a free port of 127.0.0.1 behind a FaultInjector."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    injector = FaultInjector(DomainDispatcherApplication(create_backend_app))
    port = free_port()
    server = make_server("127.0.0.1", port, injector, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", injector
    finally:
        server.shutdown()
        thread.join(timeout=5)
