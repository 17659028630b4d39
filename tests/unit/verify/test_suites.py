"""bakery/verify/suites.py: the JUnit report read one way, and the one verdict rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakery.verify.suites import SuiteResult, read_junit


def test_junit_counts_and_names_failures(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="test_agent" name="test_active"/>'
        '<testcase classname="test_agent" name="test_ports"><failure message="x"/></testcase>'
        '<testcase classname="test_aws" name="test_imds"><skipped/></testcase>'
        '<testcase classname="test_backend" name="test_unit"><error message="y"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert read_junit(junit) == (1, 2, 1, ("test_agent.test_ports", "test_backend.test_unit"))


@pytest.mark.parametrize(
    ("result", "verified"),
    [
        (SuiteResult(passed=3), True),
        (SuiteResult(passed=0), False),
        (SuiteResult(passed=3, failed=1, failed_checks=("test_a.b",), returncode=1), False),
        (SuiteResult(passed=3, returncode=1), False),
        (SuiteResult(passed=3, error="the suites ran over 900s"), False),
    ],
    ids=["passed", "nothing-ran", "a-check-failed", "pytest-failed", "error"],
)
def test_verified_only_when_checks_passed_none_failed_and_pytest_exited_0(
    result: SuiteResult, verified: bool
) -> None:
    assert result.verified is verified
    assert result.verdict == ("verified" if verified else "rejected")
    # A rejection always names why: the failed checks, or what stands for them.
    assert bool(result.named_failures) is not verified
