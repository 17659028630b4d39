"""config's `hardening` section and `verify.min_hardening_index`: every setting has a
reason, and what the image's files could not hold is refused before anything is written."""

from __future__ import annotations

import pytest

from bakery.config import load_config
from bakery.errors import BadInput


def test_every_hardening_setting_has_a_reason() -> None:
    hardening = load_config("database", "aws").hardening
    for section in (hardening.sshd, hardening.sysctl, hardening.login_defs):
        for key, setting in section.items():
            assert len(setting.why) >= 8, key
    assert all(len(why) >= 8 for why in hardening.disabled_modules.values())


def test_minimum_hardening_index_is_80_on_every_target() -> None:
    # The same gate everywhere: ~8 min of lynis per role under TCG (docs/hardening.md).
    assert load_config("backend", "aws").verify.min_hardening_index == 80
    assert load_config("backend", "local").verify.min_hardening_index == 80
    lowered = load_config("backend", "local", overrides=["verify.min_hardening_index=0"])
    assert lowered.verify.min_hardening_index == 0


@pytest.mark.parametrize(
    "override",
    [
        "verify.min_hardening_index=101",
        "hardening.sshd.PermitRootLogin.value='no\\nPermitRootLogin yes'",
        "hardening.sshd.PermitRootLogin.value='no # yes'",
        "hardening.sshd.MaxStartups={value: '10:30:60'}",
        "hardening.disabled_modules.cramfs=''",
        "hardening.login_defs.umask={value: '027', why: 'lower-case keys are not login.defs keys'}",
    ],
    ids=["index-over-100", "newline-in-sshd-value", "comment-in-sshd-value", "no-reason",
         "empty-module-reason", "lower-case-login-defs-key"],
)  # fmt: skip
def test_a_setting_the_image_files_could_not_hold_is_refused(override: str) -> None:
    key = override.split("=", 1)[0]
    with pytest.raises(BadInput) as refused:
        load_config("backend", "local", overrides=[override])
    assert key.rsplit(".", 1)[0] in str(refused.value)
