"""The lab's project switch against the real JupyterHub (from .venv) with TreSpawner: the spawn
URL `/hub/spawn/<user>?project=<id>` shows the form with that project chosen and starts nothing
(the key passphrase never travels in a URL). The bridge is the test's small stand-in server."""

import http.cookiejar
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from test_spawner import TOKEN, Handler, bridge  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[3]
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def hub(tmp_path, bridge):  # noqa: F811
    if not CHP.exists():
        pytest.fail(f"{CHP} is missing: run npm ci at the repository root")
    port, hub_port, proxy_api = free_port(), free_port(), free_port()
    (tmp_path / "bridge.token").write_text(TOKEN)
    os.chmod(tmp_path / "bridge.token", 0o600)
    (tmp_path / "jupyterhub_config.py").write_text(
        f"""
c.JupyterHub.bind_url = 'http://127.0.0.1:{port}'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{hub_port}'
c.JupyterHub.db_url = 'sqlite:///{tmp_path}/hub.sqlite'
c.JupyterHub.cookie_secret_file = '{tmp_path}/cookie_secret'
c.JupyterHub.spawner_class = 'tre'
c.JupyterHub.authenticator_class = 'dummy'
c.Authenticator.allow_all = True
c.ConfigurableHTTPProxy.command = ['{CHP}']
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{proxy_api}'
c.TreSpawner.bridge_url = '{bridge}'
c.TreSpawner.bridge_token_file = '{tmp_path}/bridge.token'
"""
    )
    exe = shutil.which("jupyterhub", path=os.path.dirname(sys.executable)) or "jupyterhub"
    log = open(tmp_path / "hub.log", "wb")
    proc = subprocess.Popen(
        [exe, "-f", str(tmp_path / "jupyterhub_config.py")],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        try:
            urllib.request.urlopen(f"{url}/hub/api/", timeout=2)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the hub did not start:\n" + (tmp_path / "hub.log").read_text()[-3000:])
            time.sleep(0.3)
    yield url, tmp_path / "hub.log"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_the_spawn_url_of_the_switch_shows_the_form_with_the_project(hub):
    url, _ = hub
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/hub/login").read().decode()
    xsrf = re.search(r'name="_xsrf"[^>]*value="([^"]+)"', page)
    form = {"username": "alice", "password": "any"}
    if xsrf:
        form["_xsrf"] = xsrf.group(1)
    opener.open(f"{url}/hub/login", data=urllib.parse.urlencode(form).encode()).read()
    Handler.seen.clear()
    spawn = opener.open(f"{url}/hub/spawn/alice?project=demo").read().decode()
    # The hub rendered TreSpawner's form: the project chosen, the reason shown, nothing started.
    assert '<option value="demo" selected>' in spawn
    assert "Enter your key passphrase to start project demo." in spawn
    assert 'name="passphrase"' in spawn
    assert not [s for s in Handler.seen if s[0] == "POST"]
    # A project the user may not start now is not chosen.
    other = opener.open(f"{url}/hub/spawn/alice?project=old").read().decode()
    assert " selected" not in other
