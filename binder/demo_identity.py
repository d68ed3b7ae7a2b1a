"""Demo identity for binder: answers JupyterHub's GET /hub/api/user for one token and one user.

The KMS resolves every request's token with the hub; in a binder there is no hub, so this
stands in for that one call. Loopback only, one user, token compared in constant time.
"""

import argparse
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--user", default="researcher")
    args = ap.parse_args()
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            header = self.headers.get("Authorization", "")
            given = header.split(" ", 1)[1].strip() if " " in header else ""
            if self.path.rstrip("/") != "/hub/api/user":
                self.send_error(404)
                return
            if not hmac.compare_digest(given.encode(), token.encode()):
                self.send_error(403)
                return
            body = json.dumps({"kind": "user", "name": args.user, "admin": False, "groups": []})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, fmt, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
