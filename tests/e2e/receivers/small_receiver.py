"""A small webhook receiver, as many destinations in the wild are: Python's ThreadingHTTPServer
with its default accept backlog of 5, HTTP/1.0 (one connection per request), a few ms per
request. Appends "<userId> <seq>" per accepted request to the file given, and prints its port.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.002)
        event = json.loads(body)
        with lock:
            out.write(f"{event.get('userId')} {event['properties']['seq']}\n")
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
