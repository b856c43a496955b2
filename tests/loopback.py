"""A loopback HTTP server over a folder, for download tests (no network).

`serve(root)` yields the server; the tests steer it through its attributes:
- `requests`: the paths asked for, in order;
- `short_reads`: file names answered with a third of their bytes under the full
  Content-Length (a connection cut mid-download);
- a path containing "stall" is accepted and never answered (until the server closes).
"""

import contextlib
import functools
import http.server
import threading


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        name = self.path.strip("/")
        if "stall" in self.path:
            self.server.release.wait(20)
            return
        if name in self.server.short_reads:
            data = (self.server.root / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))  # promises more than it sends
            self.end_headers()
            self.wfile.write(data[: len(data) // 3])
            return
        super().do_GET()


@contextlib.contextmanager
def serve(root):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.root, server.requests, server.short_reads = root, [], set()
    server.release = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
