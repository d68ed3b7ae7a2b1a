"""The server extension's routes under ``{base_url}tre/api/``.

Everything the sidebar needs goes through here:

- ``kms/<path>``: the KMS's own API (``/v1/...``), called with the user's hub token, which the
  browser never sees. Inside a session the container has no network: the job agent has to relay
  the KMS path (see the README, "What the job agent and trefs must provide").
- ``export``: the disclosure checks on ``<data_root>/<project>/export`` (plaintext).
- ``egress``: files the export folder as an egress request (checks, freeze, DEK wraps);
  ``egress/lift`` lifts the freeze of a request that no longer holds its files;
  ``egress/review`` opens a filed file for a reviewer.
- ``keys``: what this session can say about keys (key agent present, files accessible).
- ``grants``: completes the project's pending grants through trefs's key agent.
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
WITHDRAW = re.compile(r"^v1/projects/([a-z0-9][a-z0-9-]{0,62})/egress/([0-9]{1,12})/withdraw$")
SUBMIT = re.compile(r"^v1/projects/([a-z0-9][a-z0-9-]{0,62})/egress/([0-9]{1,12})/submit$")
FILE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
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

    def key_agent(self) -> str | None:
        sock = self.tre.key_agent_socket
        try:
            return sock if stat.S_ISSOCK(os.stat(sock).st_mode) else None
        except OSError:
            return None

    def session_payload(self) -> dict:
        return {
            "kmsUrl": self.tre.kms_url,
            "token": self.token(),
            "project": self.state["project"],
        }

    async def lift(self, project: str, request_id: int) -> None:
        """Lifts a freeze the KMS says is over; a failure leaves the files read-only, not lost."""
        agent = self.key_agent()
        if self.tre.outbox or not agent or project != self.state["project"]:
            return
        status, result = await self.helper(
            "lift", {**self.session_payload(), "keyAgent": agent, "requestId": request_id}
        )
        if status != 200:
            self.log.warning("could not lift the freeze of request %s: %s", request_id, result)

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
        submitted = SUBMIT.match(path) if method == "POST" else None
        if submitted and not self.tre.outbox and self.key_agent():
            # A filed draft's freeze can have been lifted and its files edited: reviewers must
            # get what was filed, so the files are frozen again and compared first.
            if submitted.group(1) != self.state["project"]:
                return self.fail(
                    409,
                    "other_project",
                    "submit this request from a session of its own project",
                )
            status, result = await self.helper(
                "verify",
                {
                    **self.session_payload(),
                    "keyAgent": self.key_agent(),
                    "requestId": int(submitted.group(2)),
                },
            )
            if status != 200:
                self.set_status(status)
                return self.finish(json.dumps(result))
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
        withdrawn = WITHDRAW.match(path) if method == "POST" else None
        if withdrawn and 200 <= resp.code < 300:
            await self.lift(withdrawn.group(1), int(withdrawn.group(2)))
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
        payload = {"exportDir": self.project_dir("export")}
        if not self.tre.outbox:
            # In a session filed paths name the file in the project tree (tre download's view).
            payload["pathPrefix"] = "export/"
        status, result = await self.helper("check", payload)
        self.set_status(status)
        self.finish(json.dumps(result))


class EgressFileHandler(TreHandler):
    @tornado.web.authenticated
    async def post(self):
        if not self.state["project"]:
            return self.fail(409, "no_project", "pick a project first")
        b = self.body()
        payload = {**self.session_payload(), "exportDir": self.project_dir("export")}
        if self.tre.outbox:
            payload["outbox"] = self.tre.outbox
        else:
            agent = self.key_agent()
            if not agent:
                return self.fail(
                    501,
                    "no_key_agent",
                    "filing needs this session's key agent (trefs) to freeze the files",
                )
            payload["keyAgent"] = agent
        if isinstance(b.get("title"), str):
            payload["title"] = b["title"][:200]
        if isinstance(b.get("requestId"), int):
            payload["requestId"] = b["requestId"]
        status, result = await self.helper("file", payload)
        self.set_status(status)
        self.finish(json.dumps(result))


class EgressLiftHandler(TreHandler):
    """The page asks; the helper lifts only if the KMS says the request no longer holds files."""

    @tornado.web.authenticated
    async def post(self):
        request_id = self.body().get("requestId")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
            return self.fail(400, "bad_request", "requestId must be a positive integer")
        if self.tre.outbox:
            return self.finish(json.dumps({"requestId": request_id, "lifted": False}))
        agent = self.key_agent()
        if not agent:
            return self.fail(501, "no_key_agent", "this session has no key agent")
        status, result = await self.helper(
            "lift", {**self.session_payload(), "keyAgent": agent, "requestId": request_id}
        )
        self.set_status(status)
        self.finish(json.dumps(result))


class EgressReviewHandler(TreHandler):
    """A reviewer opens a filed file: its egress key opened by the key agent, checked as filed."""

    @tornado.web.authenticated
    async def post(self):
        b = self.body()
        request_id, file_id = b.get("requestId"), b.get("fileId")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
            return self.fail(400, "bad_request", "requestId must be a positive integer")
        if not isinstance(file_id, str) or not FILE_ID.match(file_id):
            return self.fail(400, "bad_request", "fileId must be 32 hex digits")
        if not self.state["project"]:
            return self.fail(409, "no_project", "pick a project first")
        agent = self.key_agent()
        if self.tre.outbox or not agent:
            return self.fail(
                501, "no_key_agent", "opening a filed file needs this session's key agent"
            )
        status, result = await self.helper(
            "review",
            {
                "project": self.state["project"],
                "keyAgent": agent,
                "mountDir": self.project_dir(),
                "requestId": request_id,
                "fileId": file_id.lower(),
            },
        )
        self.set_status(status)
        self.finish(json.dumps(result))


class KeysHandler(TreHandler):
    @tornado.web.authenticated
    async def get(self):
        agent = self.key_agent() is not None
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
        agent = self.key_agent()
        if not agent:
            return self.fail(
                501, "no_key_agent", "completing grants needs the key agent of this session"
            )
        status, result = await self.helper("grants", {"project": project, "keyAgent": agent})
        self.set_status(status)
        self.finish(json.dumps(result))


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
            (url_path_join(base, "egress", "lift"), EgressLiftHandler),
            (url_path_join(base, "egress", "review"), EgressReviewHandler),
            (url_path_join(base, "keys"), KeysHandler),
            (url_path_join(base, "project"), ProjectHandler),
            (url_path_join(base, "grants"), GrantsHandler),
        ],
    )
