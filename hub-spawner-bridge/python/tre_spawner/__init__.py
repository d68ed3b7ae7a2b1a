"""JupyterHub Spawner for TRE sessions: forwards everything to the hub-spawner-bridge."""

from .spawner import BridgeClient, BridgeError, TreSpawner

__all__ = ["BridgeClient", "BridgeError", "TreSpawner"]
