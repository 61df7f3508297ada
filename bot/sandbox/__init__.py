"""The embedded Bot API server and portal simulator, and the console sandbox on top of them."""

STOPPED = "Sandbox stopped (Ctrl-C)."
"""What the sandbox says when Ctrl-C stops it: one line, whenever it comes."""
