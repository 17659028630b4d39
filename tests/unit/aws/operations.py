"""Which multi-step operation an AWS call belongs to, read from the caller's stack.

Shared by the call recorder (every call of the moto runs of tests/unit/aws) and the
failure double (the calls of the failure matrix), so the audit in
test_interrupted_operations.py can hold the matrix to every call each operation makes
anywhere in the tests. An operation is named by its entry points in bakery's code; a
call belongs to the innermost entry point on its stack (a release's copies are the copy
operation's calls, a build's clean-up is the clean-up's), or to none ("").
"""

from __future__ import annotations

import os
import sys
from types import FrameType

_AWS = os.path.join("bakery", "aws") + os.sep

# {(module file in bakery/aws, function): operation}
ENTRY_POINTS = {
    ("release.py", "release"): "release",  # "rollback" with rollback=True
    ("distribute.py", "copy_to_regions"): "copy",
    ("distribute.py", "share_image"): "share",
    ("prune.py", "prune"): "prune",
    ("janitor.py", "janitor"): "janitor",
    ("build.py", "remove_run_leftovers"): "build-clean-up",
    ("build_access.py", "remove"): "build-access-removal",
    ("canary.py", "run_canary"): "canary",
    ("launch.py", "launch_template_data"): "launch-template",
    ("launch.py", "ensure_security_group"): "launch-template",
    ("launch.py", "check_security_groups"): "launch-template",
}
OPERATIONS = frozenset(ENTRY_POINTS.values()) | {"rollback"}


def _operation_of(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    at = path.rfind(_AWS)
    if at < 0:
        return ""
    operation = ENTRY_POINTS.get((path[at + len(_AWS) :], frame.f_code.co_name), "")
    if operation == "release" and frame.f_locals.get("rollback"):
        return "rollback"
    return operation


def operation_on_stack(frame: FrameType | None = None) -> str:
    """The operation of the innermost entry point on the stack, or ""."""
    frame = frame if frame is not None else sys._getframe(1)
    while frame is not None:
        found = _operation_of(frame)
        if found:
            return found
        frame = frame.f_back
    return ""
