"""The shim against a tiny real HTTP server that speaks the bridge's API."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tre_spawner import BridgeClient, BridgeError, TreSpawner
from tre_spawner.spawner import PassphraseNeeded, render_form

TOKEN = "t" * 40
OPTIONS = {
    "projects": [
        {"id": "demo", "title": "Demo <study>", "role": "researcher", "validFrom": None,
         "validUntil": "2099-01-01T00:00:00Z", "allowed": True},
        {"id": "old", "title": "Old", "role": "researcher", "validFrom": None,
         "validUntil": None, "allowed": False, "reason": "training_expired",
         "message": "alice's hpc training expired"},
    ],
    "resources": {"cpus": {"max": 4, "default": 1}, "memoryGb": {"max": 8, "default": 2},
                  "gpus": {"max": 0, "default": 0, "gresName": "gpu"},
                  "hours": {"max": 12, "default": 4}},
}


class Handler(BaseHTTPRequestHandler):
    seen = []

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        Handler.seen.append(("GET", self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"error": {"code": "unauthorized", "message": "no"}})
        if self.path == "/api/v1/users/alice/options":
            return self.reply(200, OPTIONS)
        return self.reply(404, {"error": {"code": "not_found", "message": "no such session"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        Handler.seen.append(("POST", self.path, body))
        self.reply(403, {"error": {"code": "policy_denied", "reason": "training_expired",
                                   "message": "alice's hpc training expired on 2020-01-01"}})


@pytest.fixture()
def bridge():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_client_sends_the_token_and_maps_errors(bridge):
    data = asyncio.run(BridgeClient(bridge, TOKEN).call("GET", "/users/alice/options"))
    assert data == OPTIONS
    with pytest.raises(BridgeError) as e:
        asyncio.run(BridgeClient(bridge, "wrong").call("GET", "/users/alice/options"))
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(BridgeError) as e:
        asyncio.run(BridgeClient("http://127.0.0.1:9", TOKEN).call("GET", "/health"))
    assert e.value.code == "unreachable"


def test_form_escapes_and_shows_why_a_project_is_unavailable():
    form = render_form(OPTIONS)
    assert "Demo &lt;study&gt;" in form and "<study>" not in form
    assert 'value="old" disabled' in form
    assert "hpc training expired" in form
    assert 'name="gpus"' not in form  # the site offers no GPUs
    assert 'type="password"' in form
    assert 'name="project" class="form-control" required' in render_form({"projects": [], "resources": {}})


def test_passphrase_never_enters_user_options():
    spawner = TreSpawner()
    options = spawner.options_from_form(
        {"project": ["demo"], "cpus": ["2"], "hours": ["3"], "passphrase": ["s3cret"]}
    )
    assert options == {"project": "demo", "cpus": 2, "hours": 3}
    spawner.user_options = {"project": "demo", "passphrase": "from-rest"}
    assert spawner._take_passphrase() == "s3cret"
    assert spawner.user_options == {"project": "demo"}
    assert spawner._take_passphrase() is None


def test_state_round_trip():
    a = TreSpawner()
    a.session_id, a.job_id = "abc", "42"
    b = TreSpawner()
    b.load_state(a.get_state())
    assert (b.session_id, b.job_id) == ("abc", "42")
    b.clear_state()
    assert (b.session_id, b.job_id, b.get_state().get("session_id")) == ("", "", None)


def test_poll_without_a_session_is_stopped(bridge):
    spawner = TreSpawner(bridge_url=bridge, bridge_token=TOKEN)
    assert asyncio.run(spawner.poll()) == 0
    spawner.session_id = "gone"
    assert asyncio.run(spawner.poll()) == 0  # the bridge no longer knows it


def test_the_hub_gets_the_form_from_the_bridge(bridge):
    # JupyterHub calls a callable options_form with the spawner; the default must be that callable.
    spawner = TreSpawner(bridge_url=bridge, bridge_token=TOKEN)
    spawner.user = type("U", (), {"name": "alice"})()
    assert callable(spawner.options_form)
    form = asyncio.run(spawner.get_options_form())
    assert 'name="project"' in form and 'name="passphrase"' in form


def test_a_spawn_url_with_a_project_shows_the_form_with_it_chosen(bridge):
    # The lab's project switch opens /hub/spawn/<user>?project=<id>. The hub passes the query to
    # options_from_query and, when that refuses, renders the form (with the handler set).
    spawner = TreSpawner(bridge_url=bridge, bridge_token=TOKEN)
    with pytest.raises(PassphraseNeeded, match="start project demo"):
        spawner.options_from_query({"project": ["demo"]})
    with pytest.raises(ValueError, match="never accepted in a URL"):
        spawner.options_from_query({"project": ["demo"], "passphrase": ["x"]})
    with pytest.raises(ValueError, match="not a project id"):
        spawner.options_from_query({"project": ["../x"]})
    spawner.user = type("U", (), {"name": "alice"})()

    class Handler:
        def __init__(self, project):
            self.project = project

        def get_query_argument(self, name, default=None):
            return self.project if name == "project" else default

    spawner.handler = Handler("demo")
    form = asyncio.run(spawner.get_options_form())
    assert '<option value="demo" selected>' in form
    # A project that may not start now is never chosen, and junk in the URL is ignored.
    spawner.handler = Handler("old")
    assert " selected" not in asyncio.run(spawner.get_options_form())
    spawner.handler = Handler('demo" onfocus="x')
    assert " selected" not in asyncio.run(spawner.get_options_form())


def test_the_server_token_may_stop_the_users_own_servers():
    scopes = TreSpawner().server_token_scopes
    assert "servers!user" in scopes
    assert {"users:activity!user", "access:servers!server"} <= set(scopes)
    assert not any(s.startswith("admin") or s == "servers" for s in scopes)
