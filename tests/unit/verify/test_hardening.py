"""bakery/verify/hardening.py: lynis's report and log read into an index and findings,
the threshold rule, and the summary the JUnit report carries into the image record.

The fixture is a real lynis 3.0.8 audit (Debian's package, run on a Debian 12 build
host with `--quick`), trimmed to the lines bakery reads: every `Performing test ID` and
hardening-points line of the log, and the report's index, version, count, suggestions
and warnings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bakery.records import LISTING_COLUMNS, ImageRecord, hardening_index, listing_row
from bakery.verify.hardening import (
    LYNIS_GATE_PROFILE,
    LynisCopyError,
    LynisReportError,
    hardening_failure,
    parse_lynis,
    speed_up_lynis,
)
from bakery.verify.suites import SuiteResult, hardening_from_junit

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "lynis"
REPORT = (FIXTURES / "report.dat").read_text()
LOG = (FIXTURES / "audit.log").read_text()


def image_record(verification: dict[str, Any] | None = None) -> ImageRecord:
    return ImageRecord(
        role="backend", os="debian12", target="local", image="backend-x.qcow2",
        inputs_hash="x", git_commit="c", packer_version="1.6.6",
        built_at="2026-12-02T03:00:00Z", path=Path("record.json"), verification=verification,
    )  # fmt: skip


def test_index_is_the_reports_own() -> None:
    audit = parse_lynis(REPORT, LOG)
    assert audit.index == 56
    assert audit.lynis_version == "3.0.8"
    assert audit.tests_performed == 234


def test_points_lost_per_test_add_up_to_lynis_own_total() -> None:
    # lynis's last points line holds its running totals: the findings must account for
    # every point it did not award, so none is dropped or counted twice.
    earned, total = map(int, re.findall(r"having (\d+) points \(out of (\d+)\)", LOG)[-1])
    audit = parse_lynis(REPORT, LOG)
    assert sum(finding.lost_points for finding in audit.findings) == total - earned
    assert earned * 100 // total == audit.index


def test_findings_are_ranked_by_points_lost_and_explained() -> None:
    findings = parse_lynis(REPORT, LOG).findings
    lost = [finding.lost_points for finding in findings]
    assert lost == sorted(lost, reverse=True)
    by_id = {finding.test_id: finding for finding in findings}
    assert "Add a legal banner to /etc/issue" in by_id["BANN-7126"].summary()
    # A test that only suggested (no points at stake) still shows, after the others.
    assert by_id["LYNIS"].lost_points == 0


def test_report_without_index_is_an_error() -> None:
    cut = REPORT.replace("hardening_index=56\n", "")
    with pytest.raises(LynisReportError, match="no hardening_index"):
        parse_lynis(cut, LOG)


def test_below_the_minimum_names_the_lowest_scoring_findings() -> None:
    audit = parse_lynis(REPORT, LOG)
    message = hardening_failure(audit, 80)
    assert message is not None
    assert message.startswith("lynis hardening index 56 is below verify.min_hardening_index 80")
    assert audit.lowest_scoring()[0].summary() in message
    assert hardening_failure(audit, 56) is None
    assert hardening_failure(audit, 0) is None


def test_summary_travels_through_pytests_junit_report_into_the_record(tmp_path: Path) -> None:
    """The same route as the gate: record_testsuite_property in a check, pytest's own JUnit
    writer, read back by the suite runner."""
    summary = parse_lynis(REPORT, LOG).as_record()
    check = tmp_path / "test_check.py"
    check.write_text(
        "import json\n"
        "def test_audit(record_testsuite_property):\n"
        f"    record_testsuite_property('hardening', json.dumps({summary!r}))\n"
    )
    junit = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         str(check), f"--junitxml={junit}"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    read = hardening_from_junit(junit)
    assert read == summary
    verification = SuiteResult(passed=1, hardening=read).as_verification()
    record = image_record(verification)
    assert hardening_index(record) == "56"
    assert dict(zip(LISTING_COLUMNS, listing_row(record), strict=True))["hardening"] == "56"


def test_junit_without_an_audit_has_no_hardening(tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="a" name="b"/></testsuite></testsuites>'
    )
    assert hardening_from_junit(junit) is None
    record = image_record()
    assert hardening_index(record) == "-"


# Register in lynis 3.0.8, trimmed to the three lines the gate edits, with `date` as a
# stand-in that names its format.
LYNIS_308_REGISTER = """\
GetTimestamp() { ts=0; case "${OS}" in "Linux") ts=$(date "+%s%N") ;; *) ts=$(date "+%s") ;; esac; echo $ts; }
Register() {
        CURRENT_TS=$(GetTimestamp)
            FIND=$(echo "${TEST_SKIP_ALWAYS}" | grep "${TEST_NO}" | tr '[:lower:]' '[:upper:]')
            VALUE=$(echo ${TEST_NO} | tr '[:lower:]' '[:upper:]')
    echo "${CURRENT_TS}|${FIND}|${VALUE}"
}
"""  # noqa: E501 (lynis's own lines, verbatim)
LYNIS_308_DISPLAY = """\
Width() {
                LINESIZE=$(export LC_ALL= ; export LANG="${DISPLAY_LANG}";echo "${TEXT}" | wc -m | tr -d ' ')
    echo "${LINESIZE}"
}
"""  # noqa: E501 (lynis's own lines, verbatim)

# lynis 3.0.8's text around the gate's speed-ups, trimmed (Debian's package): the
# functions' log writers and Register, and the Debian plugin's binary count.
LYNIS_308_FUNCTIONS = (
    (
        "    LogText() {\n"
        '        if [ ! "${LOGFILE}" = "" -a ${LOGTEXT} -eq 1 ]; then '
        'CDATE=$(date "+%Y-%m-%d %H:%M:%S"); '
        'echo "${CDATE} $1" >> ${LOGFILE}; fi\n'
        "    }\n"
    )
    + """\
    LogTextBreak() {
        if [ ! "${LOGFILE}" = "" -a ${LOGTEXT} -eq 1 ]; then
            CDATE=$(date "+%Y-%m-%d %H:%M:%S")
            echo "${CDATE} ====" >> ${LOGFILE}
        fi
    }
"""
    + LYNIS_308_REGISTER
    + LYNIS_308_DISPLAY
)
LYNIS_308_DEBIAN_COUNT = "N=0\nfor I in a b c; do\n    N=`expr ${N} + 1`\ndone\necho ${N}\n"


def test_gates_lynis_logs_the_same_lines_with_one_date_per_test(tmp_path: Path) -> None:
    functions = speed_up_lynis("include/functions", LYNIS_308_FUNCTIONS)
    log, calls = tmp_path / "lynis.log", tmp_path / "date-calls"
    # Under `set -u` as lynis runs; `date` is a counting stand-in.
    script = (
        f"set -u\ndate() {{ echo called >> {calls}; echo T; }}\n"
        f"LOGFILE={log}\nLOGTEXT=1\n{functions}\n"
        "LogTextBreak\nLogText 'Performing test ID A-1 (a)'\nLogText 'Result: x'\n"
        "LogTextBreak\nLogText 'Performing test ID B-2 (b)'\nLogText 'Result: y'\n"
    )
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert [line.split(" ", 1)[1] for line in log.read_text().splitlines()] == [
        "====", "Performing test ID A-1 (a)", "Result: x",
        "====", "Performing test ID B-2 (b)", "Result: y",
    ]  # fmt: skip
    assert len(calls.read_text().splitlines()) == 2  # was 6: one per line


def test_gates_lynis_counts_binaries_the_same_without_expr() -> None:
    edited = speed_up_lynis("plugins/plugin_debian_phase1", LYNIS_308_DEBIAN_COUNT)
    assert "expr" not in edited
    ran = subprocess.run(["sh", "-c", edited], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "3"


def test_gates_lynis_reads_package_names_and_versions_the_same_without_cut() -> None:
    loop = (
        "for J in ii,libc6:amd64,2.36-9+deb12u4,amd64,GNU,C,Library ii,zlib1g,1:1.2.13,amd64; do\n"
        "            PACKAGE_NAME=$(echo ${J} | ${CUTBINARY} -d ',' -f2)\n"
        "            PACKAGE_VERSION=$(echo ${J} | ${CUTBINARY} -d ',' -f3)\n"
        'echo "${PACKAGE_NAME} ${PACKAGE_VERSION}"; done\n'
    )
    edited = speed_up_lynis("include/tests_ports_packages", loop)
    assert "CUTBINARY" not in edited
    outputs = [
        subprocess.run(["sh", "-c", f"CUTBINARY=cut\n{text}"], capture_output=True, text=True)
        for text in (loop, edited)
    ]
    assert outputs[0].stdout == outputs[1].stdout == "libc6:amd64 2.36-9+deb12u4\nzlib1g 1:1.2.13\n"


def test_gates_lynis_reads_profile_settings_the_same_without_cut_and_grep() -> None:
    loop = (
        "for CONFIGOPTION in config:x:y refresh-repositories=no a=b=c; do\n"
        '            if ContainsString "^config:" "${CONFIGOPTION}"; then\n'
        "                echo old\n"
        "            else\n"
        "                OPTION=$(echo ${CONFIGOPTION} | cut -d '=' -f1)\n"
        '                echo "${OPTION}"\n'
        "            fi\n"
        "done\n"
    )
    contains = 'ContainsString() { FIND=$(echo "$2" | grep -E "$1"); [ -n "${FIND}" ]; }\n'
    edited = speed_up_lynis("include/profiles", loop)
    assert "cut" not in edited and "ContainsString" not in edited
    outputs = [
        subprocess.run(["sh", "-c", contains + text], capture_output=True, text=True)
        for text in (loop, edited)
    ]
    assert outputs[0].stdout == outputs[1].stdout == "old\nrefresh-repositories\na\n"


def test_gates_lynis_splits_ipv6_parameters_the_same_without_awk() -> None:
    loop = (
        "for I in net.ipv6.conf.all.mtu=1280 net.ipv6.bindv6only=0 odd=a=b; do\n"
        "                SYSCTL_KEY=$(echo ${I} | ${AWKBINARY} -F= '{ print $1 }')\n"
        "                SYSCTL_VALUE=$(echo ${I} | ${AWKBINARY} -F= '{ print $2 }')\n"
        'echo "${SYSCTL_KEY} ${SYSCTL_VALUE}"; done\n'
    )
    edited = speed_up_lynis("include/tests_networking", loop)
    assert "AWKBINARY" not in edited
    outputs = [
        subprocess.run(["sh", "-c", f"AWKBINARY=awk\n{text}"], capture_output=True, text=True)
        for text in (loop, edited)
    ]
    assert (
        outputs[0].stdout
        == outputs[1].stdout
        == ("net.ipv6.conf.all.mtu 1280\nnet.ipv6.bindv6only 0\nodd a\n")
    )


def test_gates_lynis_registers_each_test_the_same_with_fewer_forks() -> None:
    edited = speed_up_lynis("include/functions", LYNIS_308_FUNCTIONS)
    assert "$(GetTimestamp)" in edited  # kept for other systems than Linux
    calls = (
        'date() { echo "date$1"; }\n'
        "for OS in Linux AIX; do for TEST_SKIP_ALWAYS in '' 'krnl-6000 ssh-7408'; do\n"
        "for TEST_NO in SSH-7408 ssh-7408 BOOT-5122; do Register; done; done; done\n"
    )
    outputs = [
        subprocess.run(["sh", "-c", f"set -u\n{text}{calls}"], capture_output=True, text=True)
        for text in (LYNIS_308_FUNCTIONS, edited)
    ]
    assert outputs[1].stderr == ""
    assert outputs[0].stdout == outputs[1].stdout
    assert outputs[0].stdout.splitlines()[:6] == [
        "date+%s%N||SSH-7408", "date+%s%N||SSH-7408", "date+%s%N||BOOT-5122",
        "date+%s%N||SSH-7408", "date+%s%N|KRNL-6000 SSH-7408|SSH-7408",
        "date+%s%N||BOOT-5122",
    ]  # fmt: skip


def test_gates_lynis_pads_screen_lines_the_same_without_wc() -> None:
    edited = speed_up_lynis("include/functions", LYNIS_308_FUNCTIONS)
    assert "wc -m" not in edited
    calls = (
        "DISPLAY_LANG=C.UTF-8\n"
        "for TEXT in '- Checking PAM modules' 'x' '- Comparing sysctl key pairs'; do "
        "Width; done\n"
    )
    outputs = [
        subprocess.run(["sh", "-c", f"set -u\n{text}{calls}"], capture_output=True, text=True)
        for text in (LYNIS_308_FUNCTIONS, edited)
    ]
    assert outputs[0].stdout == outputs[1].stdout == "23\n2\n29\n"


# KRNL-6000 in lynis 3.0.8, trimmed to the lines the gate edits and what they feed: the
# default profile's sysctl pairs are read (a key seen already is not read twice), then
# each pair is split into key, accepted values, points and description.
LYNIS_308_SYSCTL_PAIRS = """\
            FIND=$(${GREPBINARY} "^config-data=sysctl;" ${DEFAULT_PROFILE} | ${SEDBINARY} 's/ /-space-/g')
            for LINE in ${FIND}; do
                SYSCTLKEY=$(echo ${LINE} | ${AWKBINARY} -F\\; '{ print $2 }')
                HAS_KEY=$(echo ${DATA_TO_SCAN} | ${GREPBINARY} ";${SYSCTLKEY};")
                if [ $? -gt 0 ]; then DATA_TO_SCAN="${DATA_TO_SCAN} ${LINE}"; fi
            done
        for line in ${DATA_TO_SCAN}; do
            tFINDkey=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $2 }')
                tFINDexpvalue=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $3 }' | ${TRBINARY} '|' ' ')
                tFINDhp=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $4 }' | ${GREPBINARY} "[0-9]")
                tFINDdesc=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $5 }' | ${SEDBINARY} 's/-space-/ /g')
                echo "${tFINDkey}|${tFINDexpvalue}|${tFINDhp}|${tFINDdesc}"
        done
"""  # noqa: E501 (lynis's own lines, verbatim)
# Lines as default.prf has them: one accepted value or several, points or none.
SYSCTL_PROFILE = """\
config-data=sysctl;fs.suid_dumpable;0;1;Restrict core dumps;sysctl -a;url:https;category:security;
config-data=sysctl;kernel.kptr_restrict;1|2;1;Restrict pointer access;-;category:security;
config-data=sysctl;kernel.yama.ptrace_scope;1|2|3;;No points here;-;category:security;
config-data=sysctl;fs.suid_dumpable;1;1;A second line for a key already read;-;
config-data=sysctl;net.ipv4.tcp_syncookies;1;x;Use SYN cookies;-;category:network;
"""


def test_gates_lynis_splits_sysctl_pairs_the_same_without_awk_tr_grep_and_sed(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "default.prf"
    profile.write_text(SYSCTL_PROFILE)
    edited = speed_up_lynis("include/tests_kernel_hardening", LYNIS_308_SYSCTL_PAIRS)
    assert "AWKBINARY" not in edited and "TRBINARY" not in edited
    settings = (
        f"set -u\nAWKBINARY=awk GREPBINARY=grep SEDBINARY=sed TRBINARY=tr "
        f"DEFAULT_PROFILE={profile} DATA_TO_SCAN=''\n"
    )
    outputs = [
        subprocess.run(["sh", "-c", settings + text], capture_output=True, text=True)
        for text in (LYNIS_308_SYSCTL_PAIRS, edited)
    ]
    assert outputs[1].stderr == ""
    assert (
        outputs[0].stdout
        == outputs[1].stdout
        == (
            "fs.suid_dumpable|0|1|Restrict core dumps\n"
            "kernel.kptr_restrict|1 2|1|Restrict pointer access\n"
            "kernel.yama.ptrace_scope|1 2 3||No points here\n"
            "net.ipv4.tcp_syncookies|1||Use SYN cookies\n"
        )
    )


def test_gates_lynis_speed_ups_refuse_another_lynis_version() -> None:
    with pytest.raises(LynisCopyError, match="LYNIS_SPEEDUPS"):
        speed_up_lynis("plugins/plugin_debian_phase1", "N=$(( N + 1 ))\n")


def test_gates_lynis_profile_audits_the_image_as_baked() -> None:
    settings = dict(
        line.split("=", 1) for line in LYNIS_GATE_PROFILE.splitlines() if not line.startswith("#")
    )
    assert settings["refresh-repositories"] == "no"
    # Only the package-owned trust roots leave the certificate search.
    assert "/usr/share/ca-certificates" not in settings["ssl-certificate-paths"].split(":")
    assert "/usr/local/share/ca-certificates" in settings["ssl-certificate-paths"].split(":")
