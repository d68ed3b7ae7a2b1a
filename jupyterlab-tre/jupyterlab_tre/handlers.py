"""The server extension's routes under ``{base_url}tre/api/``.

Everything the sidebar needs goes through here:

- ``kms/<path>``: the KMS's own API (``/v1/...``), called with the user's hub token, which the
  browser never sees. Inside a session the container has no network: the job agent has to relay
  the KMS path (see the README, "What the job agent and trefs must provide").
- ``export``: the disclosure checks on ``<data_root>/<project>/export`` (plaintext).
- ``egress``: files the export folder as an egress request (checks, freeze, DEK wraps).
- ``keys``: what this session can say about keys (key agent present, files accessible).
- ``project``: switches the current project (a restart with the chosen project through the hub).

The TypeScript parts (checker, crypto, typed KMS client) run in ``tre-lab-helper`` with the
request on stdin, so the token is never in a command line or an environment.
"""

import asyncio
import json
import os
import re
import shutil
import stat
from urllib.parse import urlencode

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Integer, List, Unicode
from traitlets.config import Configurable

PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KMS_PATH = re.compile(r"^v1/[A-Za-z0-9._~/-]*$")
MAX_BODY = 2 * 1024 * 1024


class TreLab(Configurable):
    """Settings of the lab side of the TRE (``c.TreLab.*``)."""

    kms_url = Unicode(
        os.environ.get("TRE_KMS_URL", ""),
        config=True,
        help="Base URL of the KMS as seen from this server (in a session: the job agent's relay).",
    )
    token_file = Unicode(
        "",
        config=True,
        help="File (mode 0600) holding the hub API token to call the KMS with. "
        "Default: the server's own JUPYTERHUB_API_TOKEN.",
    )
    project = Unicode(
        os.environ.get("TRE_PROJECT", ""), config=True, help="The session's project."
    )
    data_root = Unicode("/data", config=True, help="Where projects are mounted.")
    outbox = Unicode(
        "",
        config=True,
        help="Demo mode (no trefs): where filed files are frozen as ciphertext.",
    )
    key_agent_socket = Unicode(
        os.environ.get("TRE_KEY_AGENT", "/run/tre/key-agent.sock"),
        config=True,
        help="trefs's key-agent unix socket, bind-mounted into the session.",
    )
    helper = List(
        Unicode(),
        default_value=[],
        config=True,
        help="Command running tre-lab-helper, e.g. ['node', '/opt/tre/helper/dist/cli.js'].",
    )
    helper_timeout = Integer(120, config=True, help="Seconds one helper call may take.")
    desktop_path = Unicode(
        "desktop/", config=True, help="Path of the noVNC page relative to the server's base URL."
    )


class TreHandler(APIHandler):
    @property
    def tre(self) -> TreLab:
        return self.settings["tre_lab"]

    @property
    def state(self) -> dict:
        return self.settings["tre_lab_state"]

    def fail(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def token(self) -> str:
        if self.tre.token_file:
            st = os.stat(self.tre.token_file)
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise tornado.web.HTTPError(500, reason="token file must be mode 0600")
            with open(self.tre.token_file, encoding="utf-8") as f:
                return f.read().strip()
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def project_dir(self, *parts: str) -> str:
        return os.path.join(self.tre.data_root, self.state["project"], *parts)

    def body(self) -> dict:
        if not self.request.body:
            return {}
        try:
            v = json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="body must be JSON")
        if not isinstance(v, dict):
            raise tornado.web.HTTPError(400, reason="body must be a JSON object")
        return v

    async def helper(self, command: str, payload: dict) -> tuple[int, dict]:
        cmd = list(self.tre.helper) or [shutil.which("tre-lab-helper") or "tre-lab-helper"]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(payload).encode()), self.tre.helper_timeout
            )
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return 504, {"error": {"code": "timeout", "message": f"{command} took too long"}}
        if proc.returncode == 2:
            self.log.error("tre-lab-helper %s: %s", command, err.decode(errors="replace")[:500])
            return 500, {"error": {"code": "helper_usage", "message": "the helper refused the call"}}
        try:
            result = json.loads(out or b"{}")
        except ValueError:
            return 500, {"error": {"code": "helper_output", "message": "unreadable helper answer"}}
        if proc.returncode == 0:
            return 200, result
        status = result.get("error", {}).get("status", 400)
        return (status if isinstance(status, int) else 400), result


class ConfigHandler(TreHandler):
    @tornado.web.authenticated
    async def get(self):
        hub = bool(os.environ.get("JUPYTERHUB_API_URL"))
        self.finish(
            json.dumps(
                {
                    "project": self.state["project"],
                    "mode": "hub" if hub else "demo",
                    "kms": bool(self.tre.kms_url),
                    "desktopUrl": url_path_join(self.base_url, self.tre.desktop_path),
                    "exportPath": f"{self.tre.data_root}/{self.state['project']}/export"
                    if self.state["project"]
                    else None,
                }
            )
        )


class KmsProxyHandler(TreHandler):
    """The user's own KMS calls; the KMS decides what they may do."""

    async def forward(self, method: str, path: str) -> None:
        if not KMS_PATH.match(path) or ".." in path:
            return self.fail(400, "bad_path", "only /v1/... paths of the KMS")
        if not self.tre.kms_url:
            return self.fail(503, "no_kms", "no KMS configured for this server")
        body = self.request.body if method in ("POST", "PUT") else None
        if body is not None and len(body) > MAX_BODY:
            return self.fail(413, "too_large", "request body too large")
        # JupyterLab appends a bare timestamp to GETs against caches; the KMS refuses unknown
        # parameters, so only name=value pairs go through.
        pairs = [
            (k, v.decode())
            for k, vs in self.request.query_arguments.items()
            for v in vs
            if not (k.isdigit() and v == b"")
        ]
        query = urlencode(pairs)
        url = self.tre.kms_url.rstrip("/") + "/" + path + (f"?{query}" if query else "")
        req = HTTPRequest(
            url,
            method=method,
            body=body if body is not None else (b"" if method in ("POST", "PUT") else None),
            headers={
                "Authorization": f"token {self.token()}",
                "Content-Type": "application/json",
            },
            request_timeout=60,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as e:
            self.log.warning("KMS unreachable: %s", type(e).__name__)
            return self.fail(502, "kms_unreachable", "the KMS cannot be reached")
        self.set_status(resp.code if resp.code >= 200 else 502)
        ctype = resp.headers.get("Content-Type", "application/json")
        self.set_header("Content-Type", ctype)
        self.finish(resp.body or b"")

    @tornado.web.authenticated
    async def get(self, path):
        await self.forward("GET", path)

    @tornado.web.authenticated
    async def post(self, path):
        await self.forward("POST", path)

    @tornado.web.authenticated
    async def put(self, path):
        await self.forward("PUT", path)


class ExportHandler(TreHandler):
    @tornado.web.authenticated
    async def get(self):
        if not self.state["project"]:
            return self.fail(409, "no_project", "pick a project first")
        status, result = await self.helper("check", {"exportDir": self.project_dir("export")})
        self.set_status(status)
        self.finish(json.dumps(result))


class EgressFileHandler(TreHandler):
    @tornado.web.authenticated
    async def post(self):
        if not self.state["project"]:
            return self.fail(409, "no_project", "pick a project first")
        if not self.tre.outbox:
            return self.fail(
                501,
                "no_freeze",
                "filing needs trefs's key agent to freeze the files; it does not offer that yet",
            )
        b = self.body()
        payload = {
            "kmsUrl": self.tre.kms_url,
            "token": self.token(),
            "project": self.state["project"],
            "exportDir": self.project_dir("export"),
            "outbox": self.tre.outbox,
        }
        if isinstance(b.get("title"), str):
            payload["title"] = b["title"][:200]
        if isinstance(b.get("requestId"), int):
            payload["requestId"] = b["requestId"]
        status, result = await self.helper("file", payload)
        self.set_status(status)
        self.finish(json.dumps(result))


class KeysHandler(TreHandler):
    @tornado.web.authenticated
    async def get(self):
        sock = self.tre.key_agent_socket
        agent = os.path.exists(sock) and stat.S_ISSOCK(os.stat(sock).st_mode)
        files = 0
        readable = 0
        if self.state["project"] and os.path.isdir(self.project_dir()):
            for root, dirs, names in os.walk(self.project_dir()):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for n in names:
                    files += 1
                    if os.access(os.path.join(root, n), os.R_OK):
                        readable += 1
                if files >= 100000:
                    break
        self.finish(
            json.dumps(
                {
                    "keyAgent": agent,
                    # The KEK lives in trefs outside the container: its socket being there is
                    # what "unlocked in this session" means from inside.
                    "unlocked": agent,
                    "files": files,
                    "readable": readable,
                }
            )
        )


class ProjectHandler(TreHandler):
    @tornado.web.authenticated
    async def post(self):
        project = self.body().get("project")
        if not isinstance(project, str) or not PROJECT_ID.match(project):
            return self.fail(400, "bad_project", "project must be a project id")
        hub_api = os.environ.get("JUPYTERHUB_API_URL")
        if not hub_api:
            # Demo mode: one server, no hub; the switch takes effect at once.
            self.state["project"] = project
            return self.finish(json.dumps({"project": project, "restart": False}))
        user = os.environ.get("JUPYTERHUB_USER", "")
        server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/"
        # The hub restarts the server with the chosen project: stop now (this server goes away),
        # the page then opens the spawn URL, whose query the spawner takes as its options.
        target = url_path_join(hub_prefix, "spawn", user, server) + f"?project={project}"
        stop = HTTPRequest(
            url_path_join(hub_api, "users", user, "servers", server)
            if server
            else url_path_join(hub_api, "users", user, "server"),
            method="DELETE",
            headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"},
        )
        self.finish(json.dumps({"project": project, "restart": True, "next": target}))
        await asyncio.sleep(0.5)
        try:
            await AsyncHTTPClient().fetch(stop, raise_error=False)
        except OSError:
            self.log.warning("could not ask the hub to stop this server")


class GrantsHandler(TreHandler):
    """Completing grants needs the project key, unwrapped with the KEK that trefs holds."""

    @tornado.web.authenticated
    async def post(self):
        project = self.body().get("project")
        if project != self.state["project"] or not PROJECT_ID.match(project or ""):
            return self.fail(400, "bad_project", "grants are completed for the current project")
        sock = self.tre.key_agent_socket
        if not (os.path.exists(sock) and stat.S_ISSOCK(os.stat(sock).st_mode)):
            return self.fail(
                501, "no_key_agent", "completing grants needs the key agent of this session"
            )
        body = json.dumps({"project": project}).encode()
        try:
            reader, writer = await asyncio.open_unix_connection(sock)
            writer.write(
                b"POST /grants HTTP/1.0\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(MAX_BODY), 60)
            writer.close()
        except (OSError, asyncio.TimeoutError):
            return self.fail(502, "key_agent_unreachable", "the key agent did not answer")
        head, _, payload = raw.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 502
        if code == 404:
            return self.fail(
                501, "not_offered", "this session's key agent cannot complete grants yet"
            )
        self.set_status(code)
        self.finish(payload or b"{}")


def setup_handlers(server_app) -> None:
    web_app = server_app.web_app
    tre = TreLab(parent=server_app)
    web_app.settings["tre_lab"] = tre
    web_app.settings["tre_lab_state"] = {"project": tre.project}
    base = url_path_join(web_app.settings["base_url"], "tre", "api")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "config"), ConfigHandler),
            (url_path_join(base, "kms", "(.*)"), KmsProxyHandler),
            (url_path_join(base, "export"), ExportHandler),
            (url_path_join(base, "egress"), EgressFileHandler),
            (url_path_join(base, "keys"), KeysHandler),
            (url_path_join(base, "project"), ProjectHandler),
            (url_path_join(base, "grants"), GrantsHandler),
        ],
    )
