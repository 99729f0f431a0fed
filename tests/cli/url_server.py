"""A small HTTP server for the URL-input tests, run inside the test's own network
namespace: serves the files of a folder, plus redirects.

    python -m tests.cli.url_server FOLDER ADDRESS:PORT [ADDRESS:PORT ...]

``/to/<url>`` answers 302 to ``<url>`` (``/to/http://10.77.0.1:8080/clip.mp4``);
``/loop`` redirects to itself.
"""

from __future__ import annotations

import functools
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to/") :])
            self.end_headers()
            return
        if self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"url_server: {self.client_address[0]} {format % args}\n")


def main() -> None:
    folder, *binds = sys.argv[1:]
    handler = functools.partial(Handler, directory=folder)
    servers = []
    for bind in binds:
        host, _, port = bind.rpartition(":")
        server = ThreadingHTTPServer((host, int(port)), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    threading.Event().wait()


if __name__ == "__main__":
    main()
