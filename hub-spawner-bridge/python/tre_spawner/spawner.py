"""The spawner shim. It holds no logic of its own: start, poll, stop, progress and the options
form are calls to the bridge, which renders and submits the Slurm job, checks the KMS policy,
unlocks the user's key and tracks the job. The hub keeps only the bridge's session id."""

import asyncio
import html
import json
import re
from urllib.parse import quote

from jupyterhub.spawner import Spawner
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Float, Unicode, default

TERMINAL = ("stopped", "failed")
PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class PassphraseNeeded(Exception):
    """A spawn URL names the project, but the key passphrase never travels in a URL: the hub
    shows the spawn form (with this message and the project chosen) instead of starting."""


class BridgeError(Exception):
    """The bridge answered with an error; `code` and `reason` are its stable codes."""

    def __init__(self, status, code, message, reason=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class BridgeClient:
    """A small async client for the bridge's REST API (openapi.yaml in the bridge)."""

    def __init__(self, url, token, timeout=60.0):
        self.url = url.rstrip("/") + "/api/v1"
        self.token = token
        self.timeout = timeout

    async def call(self, method, path, body=None, headers=None, timeout=None):
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if body is not None else {}),
                **(headers or {}),
            },
            body=json.dumps(body) if body is not None else None,
            request_timeout=timeout or self.timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as e:
            raise BridgeError(599, "unreachable", f"the session service is unreachable: {e}") from None
        if response.code == 599:
            raise BridgeError(599, "unreachable", f"the session service is unreachable: {response.error}")
        payload = json.loads(response.body) if response.body else {}
        if response.code >= 400:
            err = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise BridgeError(
                response.code,
                err.get("code", "http_error"),
                err.get("message", f"HTTP {response.code}"),
                err.get("reason"),
            )
        return payload


class TreSpawner(Spawner):
    """Starts TRE sessions (JupyterLab + desktop in a no-network container) through the bridge."""

    bridge_url = Unicode(
        "http://127.0.0.1:8090", config=True, help="The hub-spawner-bridge API URL."
    )
    bridge_token_file = Unicode(
        "", config=True, help="File holding the bridge's API token (mode 0600)."
    )
    bridge_token = Unicode(
        "", config=True, help="The bridge's API token (prefer bridge_token_file)."
    )
    events_wait = Float(
        20.0, config=True, help="Seconds one long poll of the bridge's events may wait."
    )

    session_id = Unicode("")
    job_id = Unicode("")
    # The passphrase lives only in memory between the form and start(); never in user_options.
    _passphrase = None

    def _client(self):
        token = self.bridge_token
        if not token and self.bridge_token_file:
            with open(self.bridge_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        if not token:
            raise RuntimeError("TreSpawner needs bridge_token_file or bridge_token")
        return BridgeClient(self.bridge_url, token)

    # -- state -------------------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if self.session_id:
            state["session_id"] = self.session_id
            state["job_id"] = self.job_id
        return state

    def load_state(self, state):
        super().load_state(state)
        self.session_id = state.get("session_id", "")
        self.job_id = state.get("job_id", "")

    def clear_state(self):
        super().clear_state()
        self.session_id = ""
        self.job_id = ""

    # -- the spawn form ----------------------------------------------------------------------

    async def _options_form(self, spawner=None):
        """The form; JupyterHub calls a callable options_form with the spawner as argument."""
        # The KMS lists the user's projects only for the user: a token of theirs that lives for
        # this one call (the spawner's own token does not exist before start).
        token, orm_token = self._form_token()
        try:
            data = await self._client().call(
                "GET",
                f"/users/{quote(self.user.name, safe='')}/options",
                headers={"X-Tre-User-Token": token} if token else None,
            )
        finally:
            if orm_token is not None:
                self.db.delete(orm_token)
                self.db.commit()
        return render_form(data, selected=self._queried_project())

    def _queried_project(self):
        """The project named by the spawn URL (`?project=`), as the lab's project switch opens it;
        the hub gives the spawner its handler before rendering the form."""
        handler = getattr(self, "handler", None)
        if handler is None:
            return None
        try:
            value = handler.get_query_argument("project", None)
        except Exception:
            return None
        return value if isinstance(value, str) and PROJECT_ID.match(value) else None

    def _form_token(self):
        new_token = getattr(self.user, "new_api_token", None)
        if new_token is None or self.db is None:
            return None, None
        from jupyterhub import orm

        token = new_token(note="tre spawn form", expires_in=120, scopes=["read:users:name!user"])
        return token, orm.APIToken.find(self.db, token)

    @default("options_form")
    def _default_options_form(self):
        return self._options_form

    @default("server_token_scopes")
    def _default_server_token_scopes(self):
        # The server role's own scopes, plus stopping the user's own servers: the lab's project
        # switch stops this server and opens the spawn URL of the next project. The user holds
        # that scope anyway; the token never leaves the container but through the agent's relay.
        return ["users:activity!user", "access:servers!server", "servers!user"]

    def options_from_form(self, formdata):
        def first(name, default=""):
            values = formdata.get(name) or [default]
            return values[0].strip() if isinstance(values[0], str) else values[0]

        options = {"project": first("project")}
        for name in ("cpus", "memoryGb", "gpus", "hours"):
            value = first(name)
            if value != "":
                options[name] = int(value)
        passphrase = first("passphrase")
        if passphrase:
            self._passphrase = passphrase
        return options

    def options_from_query(self, query_data):
        """`/hub/spawn/<user>?project=<id>`: the project switch. Starting needs the passphrase,
        which must not be in a URL, so this never starts: it refuses with a message and the hub
        falls back to the form, where the project is already chosen."""
        values = query_data.get("project") or [""]
        project = values[0] if isinstance(values[0], str) else ""
        if not PROJECT_ID.match(project):
            raise ValueError("the spawn URL's project is not a project id")
        if "passphrase" in query_data:
            raise ValueError("a key passphrase is never accepted in a URL")
        raise PassphraseNeeded(f"Enter your key passphrase to start project {project}.")

    # -- lifecycle ---------------------------------------------------------------------------

    def _take_passphrase(self):
        """The passphrase from the form, or from a REST start's user_options, which the hub has
        stored: it is removed there and the stored options rewritten at once."""
        passphrase = self._passphrase
        self._passphrase = None
        options = dict(self.user_options or {})
        if "passphrase" in options:
            from_rest = options.pop("passphrase")
            passphrase = passphrase or from_rest
            self.user_options = options
            if self.orm_spawner is not None:
                self.orm_spawner.user_options = options
                self.db.commit()
        return passphrase

    async def start(self):
        client = self._client()
        passphrase = self._take_passphrase()
        options = {
            k: v
            for k, v in (self.user_options or {}).items()
            if k in ("project", "cpus", "memoryGb", "gpus", "hours")
        }
        env = self.get_env()
        body = {
            "user": self.user.name,
            "serverName": self.name or "",
            "baseUrl": self.server.base_url,
            "options": options,
            "env": {k: str(v) for k, v in env.items()},
        }
        if env.get("JUPYTERHUB_API_TOKEN"):
            body["userToken"] = env["JUPYTERHUB_API_TOKEN"]
        if passphrase:
            body["key"] = {"passphrase": passphrase}
        try:
            session = await client.call("POST", "/sessions", body)
        except BridgeError as e:
            if e.code == "policy_denied":
                raise web.HTTPError(403, log_message=f"Not allowed: {e} ({e.reason})", reason=str(e))
            if e.status < 500:
                raise web.HTTPError(e.status, log_message=str(e), reason=str(e))
            raise
        finally:
            passphrase = None
            body.pop("key", None)
        self.session_id = session["id"]
        self.job_id = session.get("jobId") or ""
        # Commit the job id at once: a hub restart from here on finds the job again.
        if self.orm_spawner is not None:
            self._save_state()
        session = await self._wait_until(("ready",) + TERMINAL)
        if session["state"] != "ready":
            raise RuntimeError(f"the session did not start: {session['message']}")
        self.job_id = session.get("jobId") or self.job_id
        return session["url"]

    def _save_state(self):
        self.orm_spawner.state = self.get_state()
        self.db.commit()

    async def _wait_until(self, states):
        client = self._client()
        after = 0
        while True:
            res = await client.call(
                "GET",
                f"/sessions/{self.session_id}/events?after={after}&wait={self.events_wait:g}",
                timeout=self.events_wait + 30,
            )
            for event in res["events"]:
                after = max(after, event["seq"])
            if res["state"] in states:
                return await client.call("GET", f"/sessions/{self.session_id}")

    async def poll(self):
        if not self.session_id:
            return 0
        try:
            session = await self._client().call("GET", f"/sessions/{self.session_id}")
        except BridgeError as e:
            if e.status == 404:
                return 0
            # The bridge is away: say nothing rather than declare a live session dead.
            self.log.warning("poll of %s failed: %s", self.session_id, e)
            return None
        if session["state"] in TERMINAL:
            return 1 if session["state"] == "failed" else 0
        return None

    async def stop(self, now=False):
        if not self.session_id:
            return
        client = self._client()
        try:
            session = await client.call("DELETE", f"/sessions/{self.session_id}")
        except BridgeError as e:
            if e.status == 404:
                return
            raise
        if session["state"] not in TERMINAL and not now:
            await asyncio.wait_for(self._wait_until(TERMINAL), timeout=self.stop_timeout or 60)

    async def progress(self):
        if not self.session_id:
            # start() has not submitted yet; progress is asked again once it has.
            for _ in range(100):
                await asyncio.sleep(0.1)
                if self.session_id:
                    break
            else:
                return
        client = self._client()
        after = 0
        while True:
            res = await client.call(
                "GET",
                f"/sessions/{self.session_id}/events?after={after}&wait={self.events_wait:g}",
                timeout=self.events_wait + 30,
            )
            for event in res["events"]:
                after = max(after, event["seq"])
                yield {"progress": event["progress"], "message": event["message"]}
            if res["state"] in ("ready",) + TERMINAL:
                return


def render_form(data, selected=None):
    """The spawn form: the user's projects (a disabled choice shows why it cannot start; the
    `selected` one is chosen), the resources the site offers, and the passphrase that unlocks
    the user's key."""
    esc = html.escape
    rows = []
    projects = data.get("projects", [])
    if projects:
        options = []
        for p in projects:
            window = ""
            if p.get("validUntil"):
                window = f" (access until {esc(p['validUntil'])})"
            why = "" if p.get("allowed") else f" - unavailable: {esc(p.get('message', p.get('reason', '')))}"
            disabled = "" if p.get("allowed") else " disabled"
            chosen = " selected" if selected and p["id"] == selected and p.get("allowed") else ""
            options.append(
                f'<option value="{esc(p["id"])}"{disabled}{chosen}>'
                f'{esc(p["title"])}{window}{why}</option>'
            )
        rows.append(
            '<label for="tre-project">Project</label>'
            f'<select id="tre-project" name="project" class="form-control">{"".join(options)}</select>'
        )
    else:
        rows.append(
            '<label for="tre-project">Project</label>'
            '<input id="tre-project" name="project" class="form-control" required>'
        )
    r = data.get("resources", {})
    for name, label in (("cpus", "CPUs"), ("memoryGb", "Memory (GB)"), ("gpus", "GPUs"), ("hours", "Hours")):
        spec = r.get(name) or {}
        if name == "gpus" and not spec.get("max"):
            continue
        low = 0 if name == "gpus" else 1
        rows.append(
            f'<label for="tre-{name}">{label}</label>'
            f'<input id="tre-{name}" name="{name}" type="number" class="form-control" '
            f'min="{low}" max="{int(spec.get("max", low))}" value="{int(spec.get("default", low))}">'
        )
    rows.append(
        '<label for="tre-passphrase">Key passphrase</label>'
        '<input id="tre-passphrase" name="passphrase" type="password" class="form-control" '
        'autocomplete="off">'
    )
    return "\n".join(f"<div class=\"form-group\">{row}</div>" for row in rows)
