"""The container bake's pieces (bakery/local/container.py) that can be checked without
LXC: where each image bakes, what a host without LXC is told, that the container runs
the very command lines of the Packer template, and the clean-up's parsing. The bake
itself runs in CI's `invoke build` (all three x86_64 roles) and its image is then
verified by the same gate as a VM-baked one."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bakery.config import HOST_ARCH, load_config
from bakery.errors import BadInput
from bakery.local.container import (
    BRIDGE,
    LXC_TOOLS,
    bakes_in_container,
    check_host,
    container_config,
    missing_for_containers,
    step_command,
    write_seed,
)
from bakery.packer import PackerVersion
from bakery.processes import loop_backings, mounts_under
from bakery.render import provisioning_steps, render_role
from tests.unit.local.stand_in_programs import path_with

FOREIGN = "arm64" if HOST_ARCH == "x86_64" else "x86_64"


def test_auto_bakes_the_hosts_own_arch_in_a_container_and_another_in_a_vm() -> None:
    assert bakes_in_container(load_config("backend", "local"))
    assert not bakes_in_container(load_config("backend", "local", overrides=[f"arch={FOREIGN}"]))
    assert not bakes_in_container(load_config("backend", "local", overrides=["local.bake_in=vm"]))


def test_a_container_for_another_arch_is_refused_naming_the_setting() -> None:
    cfg = load_config("backend", "local", overrides=[f"arch={FOREIGN}", "local.bake_in=container"])
    with pytest.raises(BadInput) as caught:
        bakes_in_container(cfg)
    assert "local.bake_in" in str(caught.value) and "auto or vm" in str(caught.value)


def test_an_unknown_bake_in_value_is_bad_input() -> None:
    with pytest.raises(BadInput) as caught:
        load_config("backend", "local", overrides=["local.bake_in=chroot"])
    assert "bake_in" in str(caught.value)


def test_a_host_without_lxc_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path))
    problem = missing_for_containers(tmp_path)
    assert problem is not None
    assert "lxc-start" in problem and "apt-get install lxc" in problem
    with pytest.raises(BadInput) as caught:
        check_host()
    assert "local.bake_in=vm" in str(caught.value)


def test_a_host_without_the_bridge_is_told_to_start_lxc_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, *LXC_TOOLS))
    net = tmp_path / "net"
    net.mkdir()
    problem = missing_for_containers(net)
    assert problem is not None and BRIDGE in problem and "lxc-net" in problem
    (net / BRIDGE).mkdir()
    assert missing_for_containers(net, *running_dnsmasq(tmp_path)) is None


def process_status(proc: Path, pid: int, name: str, state: str = "S (sleeping)") -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "status").write_text(f"Name:\t{name}\nUmask:\t0022\nState:\t{state}\n")


def running_dnsmasq(tmp_path: Path) -> tuple[Path, Path]:
    """A pid file like lxc-net's and a /proc where that pid is a running dnsmasq."""
    pid_file, proc = tmp_path / "dnsmasq.pid", tmp_path / "proc"
    pid_file.write_text("4242\n")
    process_status(proc, 4242, "dnsmasq")
    return pid_file, proc


def test_a_bridge_whose_dnsmasq_died_is_told_to_restart_lxc_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What CI met: a host whose processes were all killed keeps lxcbr0 and lxc-net's pid
    file, but no dnsmasq; each container then waited 2 minutes for DHCP and apt could
    not resolve the mirror."""
    monkeypatch.setenv("PATH", path_with(tmp_path, *LXC_TOOLS))
    net = tmp_path / "net"
    (net / BRIDGE).mkdir(parents=True)
    pid_file, proc = running_dnsmasq(tmp_path)
    assert missing_for_containers(net, pid_file, proc) is None
    shutil.rmtree(proc / "4242")  # the process is gone, its pid file is not
    stale = missing_for_containers(net, pid_file, proc)
    assert stale is not None and "dnsmasq" in stale and "lxc-net" in stale
    process_status(proc, 4242, "dnsmasq", "Z (zombie)")  # killed, not yet reaped
    assert missing_for_containers(net, pid_file, proc) == stale
    process_status(proc, 4242, "python3")  # the pid is someone else's now
    assert missing_for_containers(net, pid_file, proc) == stale
    pid_file.unlink()
    assert missing_for_containers(net, pid_file, proc) == stale


def test_the_container_runs_the_packer_templates_command_lines(tmp_path: Path) -> None:
    """One set of provisioners, run the same way: each step's command in the container is
    the rendered template's, less the sudo that the VM's SSH login needs."""
    cfg = load_config("backend", "local")
    rendered = render_role(cfg, PackerVersion(1, 6, 6), tmp_path)
    template = (rendered.directory / "build.pkr.hcl").read_text()
    in_template = re.findall(r'"sudo (python3 [^"]+)"', template)
    in_container = [" ".join(step_command(step)) for step in provisioning_steps(cfg)]
    assert in_template == in_container


def test_the_container_has_its_own_network_on_the_bridge(tmp_path: Path) -> None:
    config = container_config("bake-backend", tmp_path / "rootfs")
    assert f"lxc.rootfs.path = dir:{tmp_path}/rootfs" in config
    assert "lxc.net.0.type = veth" in config and f"lxc.net.0.link = {BRIDGE}" in config
    # Sharing the host's network would let the bake's services and sysctls reach the host.
    assert "lxc.net.0.type = none" not in config


def test_the_seed_is_where_cloud_init_looks_and_private(tmp_path: Path) -> None:
    write_seed(tmp_path, "instance-id: x\n", "#cloud-config\n")
    seed = tmp_path / "var/lib/cloud/seed/nocloud"
    assert (seed / "meta-data").read_text() == "instance-id: x\n"
    assert (seed / "user-data").stat().st_mode & 0o077 == 0


def test_loops_of_a_disk_include_those_of_a_deleted_one() -> None:
    listing = (
        "/dev/loop0 /work/b/build/.work/build-1/local/backend-run/disk.raw\n"
        "/dev/loop1 /work/b/build/.work/build-1/local/backend-run/disk.raw (deleted)\n"
        "/dev/loop2 /var/other.img\n"
    )
    disk = Path("/work/b/build/.work/build-1/local/backend-run/disk.raw")
    backed_by_disk = [name for name, backing in loop_backings(listing) if backing == str(disk)]
    assert backed_by_disk == ["/dev/loop0", "/dev/loop1"]


def test_mounts_under_a_folder_deepest_first(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw - ext4 /dev/vda rw",
            f"90 22 7:0 / {folder}/a rw - ext4 /dev/loop0 rw",
            f"91 90 0:5 / {folder}/a/dev rw - tmpfs none rw",
            f"92 22 7:1 / {folder}/with\\040space rw - ext4 /dev/loop1 rw",
            f"93 22 7:2 / {tmp_path}/runner rw - ext4 /dev/loop2 rw",
        ]
    )
    assert mounts_under(folder, mountinfo) == [
        f"{folder}/with space",
        f"{folder}/a/dev",
        f"{folder}/a",
    ]
