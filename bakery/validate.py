"""`packer validate` for rendered roles, with stand-ins for the run inputs.

A rendered template leaves run inputs (the base image, the build key, the seed) to
each build. Validation checks the template, not those files, so it supplies small
stand-ins in a temporary folder that is always removed.

`validate_all` runs the roles' Packer processes at once and remembers each success by
the hash of what Packer was shown (the rendered Packer files, the Packer version, this
module): validating them again unchanged starts no Packer at all.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.artifacts import tree_hash
from bakery.durable import write_atomically
from bakery.errors import OperationFailed
from bakery.hcl import write_var_file
from bakery.packer import run_packer
from bakery.render import BUILD_ROOT, RenderedRole

VALIDATED_CACHE = BUILD_ROOT / ".validated"
# The folder the templates upload (build.pkr.hcl: `${path.root}/stage/`).
STAGE = "stage"


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


def check_formatting(rendered: list[RenderedRole]) -> None:
    """One `packer fmt -check` for every rendered role's HCL (each Packer process costs
    more than the check): a folder of links named `<target>.<role>.<file>`."""
    if not rendered:
        return
    with tempfile.TemporaryDirectory(prefix="bakery-fmt-") as tmp:
        for item in rendered:
            for path in packer_files(item.directory):
                if path.name.endswith(".pkr.hcl"):
                    (Path(tmp) / f"{item.target}.{item.role}.{path.name}").symlink_to(path)
        run_packer(["fmt", "-check", "-diff", "."], Path(tmp))


def validate_rendered(rendered: RenderedRole, *, formatting: bool = True) -> str:
    """Run `packer fmt -check` (unless checked already) and `packer validate` on one
    rendered role."""
    if formatting:
        check_formatting([rendered])
    with tempfile.TemporaryDirectory(prefix="bakery-validate-") as tmp:
        var_file = write_var_file(
            Path(tmp) / "run.pkrvars.hcl", _stand_in_run_inputs(rendered, Path(tmp))
        )
        return run_packer(["validate", f"-var-file={var_file}", "."], rendered.directory)


@dataclass(frozen=True)
class Validated:
    """One role's validation: Packer's output, and whether it was remembered."""

    rendered: RenderedRole
    output: str
    cached: bool


def packer_files(directory: Path) -> list[Path]:
    """The files Packer reads from a rendered folder: its HCL (and any JSON or var files)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and ".pkr" in p.name)


def validation_key(rendered: RenderedRole) -> str:
    """What decides the verdict: the Packer files, that the stage they upload exists, the
    Packer version and the stand-ins. The stage's contents are not Packer's to read, so
    an edit of a provisioner or a rootfs file needs no second `packer validate`."""
    digest = hashlib.sha256()
    digest.update(f"packer {rendered.packer_version}\0".encode())
    digest.update(Path(__file__).read_bytes())  # the stand-ins and the commands run
    digest.update(tree_hash(packer_files(rendered.directory), rendered.directory).encode())
    digest.update(f"stage {(rendered.directory / STAGE).is_dir()}\0".encode())
    return digest.hexdigest()


def validate_all(
    rendered: list[RenderedRole], cache_dir: Path = VALIDATED_CACHE
) -> list[Validated]:
    """Validate every rendered role, the ones not validated before at once; raise one
    OperationFailed naming every role that failed."""
    keys = {item.directory: validation_key(item) for item in rendered}
    remembered = {
        item.directory: (cache_dir / keys[item.directory]).read_text(encoding="utf-8")
        for item in rendered
        if (cache_dir / keys[item.directory]).is_file()
    }
    todo = [item for item in rendered if item.directory not in remembered]
    try:
        check_formatting(todo)
    except OperationFailed as exc:
        # The links' names say which role and target each drifting file belongs to.
        raise OperationFailed(f"rendered HCL is not in canonical form: {exc}") from exc

    def one(item: RenderedRole) -> str | OperationFailed:
        try:
            return validate_rendered(item, formatting=False)
        except OperationFailed as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        outcomes = dict(zip([item.directory for item in todo], pool.map(one, todo), strict=True))
    failures = [
        f"{item.role} ({item.target}): {outcome}"
        for item in todo
        if isinstance(outcome := outcomes[item.directory], OperationFailed)
    ]
    if failures:
        raise OperationFailed("packer rejected the rendered templates:\n" + "\n".join(failures))
    cache_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for item in rendered:
        if item.directory in remembered:
            results.append(Validated(item, remembered[item.directory], cached=True))
            continue
        output = str(outcomes[item.directory])
        write_atomically(cache_dir / keys[item.directory], output.encode())
        results.append(Validated(item, output, cached=False))
    return results
