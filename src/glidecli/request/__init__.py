"""The requests of the rendering commands, shared by every front end (the CLI, the server,
Python): typed requests with their options declared once (commands.py, options.py; values.py
reads and checks each value), and their plans, checked against the manifest before any model
loads (plan.py)."""
