# Put first on jupyter-server's PYTHONPATH inside a session. jsonschema imports rfc3987_syntax
# only to check the "iri" formats, and that import builds a Lark grammar: about half of
# jupyterhub-singleuser's import time. jsonschema skips those checks when the import fails;
# nothing in a session's event schemas uses them.
raise ImportError("rfc3987_syntax is not loaded in TRE sessions")
