"""app.workers, as rendered into the app's unit: one uvicorn process by default; above 1,
gunicorn with that many uvicorn workers and the distro told to defer its SDK to them
(app/backend/gunicorn.conf.py's post-fork hook runs for real on the image: the gate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from systemd_units import UNIT_DIR
from test_rootfs_render import unit_lines

from bakery.config import load_config
from bakery.errors import ConfigError
from bakery.packer import PackerVersion
from bakery.render import render_role


def rendered_unit(tmp_path: Path, *overrides: str) -> Path:
    cfg = load_config("backend", "aws", overrides=list(overrides))
    stage = render_role(cfg, PackerVersion(1, 6, 6), tmp_path).stage
    return stage / "rootfs" / UNIT_DIR / "fastapi-otel.service"


def test_one_worker_is_uvicorn_alone(tmp_path: Path) -> None:
    unit = rendered_unit(tmp_path)
    [exec_start] = unit_lines(unit, "ExecStart")
    assert "/venv/bin/uvicorn main:app" in exec_start
    assert exec_start.endswith("--workers 1 --no-access-log")
    assert "OTEL_AWS_PYTHON_DEFER_TO_WORKERS_ENABLED=true" not in unit.read_text()


def test_several_workers_run_gunicorn_with_uvicorn_workers(tmp_path: Path) -> None:
    cfg = load_config("backend", "aws")
    unit = rendered_unit(tmp_path, "app.workers=3")
    [exec_start] = unit_lines(unit, "ExecStart")
    app_dir = cfg.app.dir
    assert f"{app_dir}/venv/bin/opentelemetry-instrument {app_dir}/venv/bin/gunicorn main:app" in (
        exec_start
    )
    assert f"-c {app_dir}/gunicorn.conf.py" in exec_start
    assert "--worker-class uvicorn_worker.UvicornWorker --workers 3" in exec_start
    assert exec_start.endswith(f"--bind 0.0.0.0:{cfg.app.port}")
    # The same launch-time resource as with one worker.
    assert '"OTEL_RESOURCE_ATTRIBUTES=service.name=${SERVICE_NAME},' in exec_start
    environment = unit_lines(unit, "Environment")
    assert "OTEL_AWS_PYTHON_DEFER_TO_WORKERS_ENABLED=true" in environment
    assert "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=process" in environment


@pytest.mark.parametrize("workers", ["0", "33"])
def test_worker_count_out_of_range_is_refused(workers: str) -> None:
    with pytest.raises(ConfigError, match=r"app\.workers"):
        load_config("backend", "aws", overrides=[f"app.workers={workers}"])


def test_gunicorn_gives_a_booting_worker_time_to_set_up_its_sdk() -> None:
    # A worker's SDK set-up (post_fork) and app import count against gunicorn's
    # `timeout`; the 30 s default kills slow-starting workers in a loop.
    settings: dict[str, object] = {}
    conf = Path(__file__).parents[3] / "app" / "backend" / "gunicorn.conf.py"
    exec(compile(conf.read_text(), str(conf), "exec"), settings)
    assert isinstance(settings["timeout"], int)
    assert settings["timeout"] >= 120
    assert callable(settings["post_fork"])
