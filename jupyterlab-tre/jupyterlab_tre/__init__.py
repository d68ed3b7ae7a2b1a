"""JupyterLab extension of the TRE: projects, keys, egress and the desktop in the left sidebar.

The Python package carries the prebuilt labextension and a small jupyter-server extension that
reaches the KMS on the user's behalf (the browser never sees the user's hub token) and runs the
TRE's disclosure checks and egress filing on the export folder.
"""

try:
    from ._version import __version__
except ImportError:  # running from a source tree that was never built
    __version__ = "dev"

from .handlers import setup_handlers


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "jupyterlab-tre"}]


def _jupyter_server_extension_points():
    return [{"module": "jupyterlab_tre"}]


def _load_jupyter_server_extension(server_app):
    setup_handlers(server_app)
    server_app.log.info("jupyterlab_tre: server extension loaded")
