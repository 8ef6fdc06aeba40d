"""A static file server for benchmarks/bench_fetch.py, run as its own process:
`python benchmarks/paced_http_server.py PORT DIRECTORY [MB_PER_S]`.

With MB_PER_S > 0 each connection is paced to that rate, as a real link paces a download; with
0 (the default) it is `http.server`'s own handler, which on localhost makes the bytes nearly free.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import time


class PacedHandler(http.server.SimpleHTTPRequestHandler):
    bytes_per_s = 0.0
    block = 256 * 1024

    def log_message(self, *args) -> None:  # quiet
        pass

    def copyfile(self, source, outputfile) -> None:
        if self.bytes_per_s <= 0:
            shutil.copyfileobj(source, outputfile)
            return
        started, sent = time.monotonic(), 0
        while block := source.read(self.block):
            outputfile.write(block)
            sent += len(block)
            ahead = sent / self.bytes_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """yt-dlp's generic extractor reads the first bytes of a URL and hangs up: expected."""


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    PacedHandler.bytes_per_s = float(sys.argv[3]) * 1e6 if len(sys.argv) > 3 else 0.0
    handler = functools.partial(PacedHandler, directory=directory)
    with QuietServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
