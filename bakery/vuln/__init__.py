"""The vulnerability gate: Debian packages with a pending security update, Python
packages with a known advisory, and the reviewed allow-list that may accept either."""
