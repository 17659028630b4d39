"""`packer validate` for rendered roles, with stand-ins for the run inputs.

A rendered template leaves run inputs (the base image, the build key, the seed) to
each build. Validation checks the template, not those files, so it supplies small
stand-ins in a temporary folder that is always removed.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bakery.hcl import write_var_file
from bakery.packer import run_packer
from bakery.render import RenderedRole


def _stand_in_run_inputs(rendered: RenderedRole, scratch: Path) -> dict[str, Any]:
    values: dict[str, Any] = {"inputs_hash": "validate-only", "git_commit": "validate-only"}
    if rendered.target != "local":
        return {**values, "run_id": "validate-only"}
    base = scratch / "base.qcow2"
    base.write_bytes(b"")
    key = scratch / "build_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
    )
    seed = scratch / "user-data"
    seed.write_text("#cloud-config\n", encoding="utf-8")
    values.update(
        base_image=str(base),
        base_image_checksum="sha256:" + hashlib.sha256(b"").hexdigest(),
        ssh_private_key_file=str(key),
        seed_files=[str(seed)],
        accelerator="tcg",
        output_directory=str(scratch / "output"),
    )
    return values


def validate_rendered(rendered: RenderedRole) -> str:
    """Run `packer fmt -check` and `packer validate` on one rendered role."""
    run_packer(["fmt", "-check", "-diff", "."], rendered.directory)
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        var_file = write_var_file(
            Path(tmp) / "run.pkrvars.hcl", _stand_in_run_inputs(rendered, Path(tmp))
        )
        return run_packer(["validate", f"-var-file={var_file}", "."], rendered.directory)
