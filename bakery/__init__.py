"""bakery: bake, verify and release golden images for the three-tier app.

Data flows one way: config -> render -> packer -> image -> verify -> release.
"""

ROLES = ("backend", "frontend", "database")
TARGETS = ("local", "aws")
