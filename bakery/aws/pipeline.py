"""What the lead's `build --target aws` and `verify --target aws` tasks call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bakery.aws.build import build_on_aws
from bakery.aws.records import RECORDS_DIR, REPORTS_DIR
from bakery.aws.verify import Runner, VerificationResult, run_testinfra, verify_image
from bakery.config import BakeryConfig
from bakery.errors import BadInput, OperationFailed
from bakery.records import ImageRecord
from bakery.render import RenderedRole


def build(
    configs: Sequence[BakeryConfig],
    rendered_roles: Sequence[RenderedRole],
    *,
    records_dir: Path = RECORDS_DIR,
) -> list[ImageRecord]:
    """Build each rendered role's AMI in turn; stops at the first failure (which leaves
    nothing of its own behind)."""
    by_role: dict[str, BakeryConfig] = {cfg.role: cfg for cfg in configs}
    missing = [item.role for item in rendered_roles if item.role not in by_role]
    if missing:
        raise BadInput(f"no config for rendered role(s) {missing}")
    return [
        build_on_aws(item, by_role[item.role], records_dir=records_dir) for item in rendered_roles
    ]


def verify(
    configs: Sequence[BakeryConfig],
    runner: Runner = run_testinfra,
    *,
    ami_ids: dict[str, str] | None = None,
    ingress_cidr: str | None = None,
    reports_dir: Path = REPORTS_DIR,
    records_dir: Path = RECORDS_DIR,
) -> list[VerificationResult]:
    """Verify each role's newest built AMI (or `ami_ids[role]`); raise when any is rejected,
    after all have been tried and tagged."""
    results = [
        verify_image(
            cfg,
            (ami_ids or {}).get(cfg.role),
            runner=runner,
            ingress_cidr=ingress_cidr,
            reports_dir=reports_dir,
            records_dir=records_dir,
        )
        for cfg in configs
    ]
    rejected = [result for result in results if not result.verified]
    if rejected:
        raise OperationFailed(
            "rejected: "
            + "; ".join(
                f"{r.role} {r.ami_id} ({r.summary}; report {r.junit_path})" for r in rejected
            )
        )
    return results
