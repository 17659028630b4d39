"""The roles an image can have. Each check module says which it applies to, as
`ROLES = ALL` or e.g. `ROLES = {"backend"}`; conftest.py deselects the rest."""

ALL = frozenset({"backend", "frontend", "database"})
