"""Reading a lynis audit: the hardening index and the findings that cost the most points.

The gate's `tests/infra/test_hardening.py` runs lynis (this host's Debian package, copied
onto the booted image) and hands its report file and log here. lynis writes the index
into the report (`hardening_index=N`); the points each test earned are only in its log
(`Performing test ID X` ... `assigned partial number of hardening points (A of B)`),
so the findings are ranked from the log and explained by the report's suggestions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bakery.errors import BakeryError

_TEST_START = re.compile(r"Performing test ID (?P<id>[A-Z0-9]+-[0-9A-Z]+) \((?P<title>.*)\)\s*$")
_PARTIAL = re.compile(
    r"assigned partial number of hardening points \((?P<got>\d+) of (?P<max>\d+)\)"
)
_FULL = re.compile(r"assigned maximum number of hardening points for this item \((?P<max>\d+)\)")
# How many findings a record and a failure message carry.
SHOWN_FINDINGS = 10


class LynisReportError(BakeryError):
    """A lynis report without the hardening index: lynis did not finish."""


@dataclass(frozen=True)
class HardeningFinding:
    """One lynis test that did not earn all its hardening points."""

    test_id: str
    lost_points: int
    max_points: int
    title: str = ""
    suggestions: tuple[str, ...] = ()

    def summary(self) -> str:
        what = "; ".join(self.suggestions) or self.title or "no suggestion given"
        if not self.max_points:
            return f"{self.test_id}: {what}"
        return f"{self.test_id} (-{self.lost_points} of {self.max_points}): {what}"


@dataclass(frozen=True)
class HardeningAudit:
    """What one lynis run found on one image."""

    index: int
    lynis_version: str = ""
    tests_performed: int = 0
    findings: tuple[HardeningFinding, ...] = field(default=())

    def lowest_scoring(self, count: int = SHOWN_FINDINGS) -> tuple[HardeningFinding, ...]:
        return self.findings[:count]

    def as_record(self) -> dict[str, Any]:
        """What an image record keeps (`verification.hardening`)."""
        return {
            "index": self.index,
            "tool": f"lynis {self.lynis_version}".strip(),
            "tests_performed": self.tests_performed,
            "lowest_scoring": [finding.summary() for finding in self.lowest_scoring()],
        }


def _report_values(report: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in report.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values.setdefault(key.removesuffix("[]"), []).append(value)
    return values


def _points_by_test(log: str) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """(lost, max) points per test id, summed over the test's items, and each title."""
    points: dict[str, tuple[int, int]] = {}
    titles: dict[str, str] = {}
    current = ""
    for line in log.splitlines():
        start = _TEST_START.search(line)
        if start:
            current = start.group("id")
            titles[current] = start.group("title")
            continue
        partial = _PARTIAL.search(line)
        full = _FULL.search(line)
        if not current or not (partial or full):
            continue
        if partial:
            earned, most = int(partial.group("got")), int(partial.group("max"))
        else:
            assert full is not None
            earned = most = int(full.group("max"))
        lost, total = points.get(current, (0, 0))
        points[current] = (lost + most - earned, total + most)
    return points, titles


def parse_lynis(report: str, log: str = "") -> HardeningAudit:
    """The hardening index from a lynis report file, findings ranked by points lost."""
    values = _report_values(report)
    index_values = values.get("hardening_index", [])
    if not index_values or not index_values[-1].strip().isdigit():
        raise LynisReportError(
            "the lynis report has no hardening_index: lynis did not finish its audit (see its log)"
        )
    suggestions: dict[str, list[str]] = {}
    for entry in values.get("suggestion", []) + values.get("warning", []):
        test_id, _, rest = entry.partition("|")
        text = rest.split("|", 1)[0].strip()
        if text and text not in suggestions.setdefault(test_id, []):
            suggestions[test_id].append(text)
    points, titles = _points_by_test(log)
    findings = [
        HardeningFinding(
            test_id, lost, most, titles.get(test_id, ""), tuple(suggestions.get(test_id, ()))
        )
        for test_id, (lost, most) in points.items()
        if lost > 0
    ]
    # Tests that only suggested (no points at stake) come after every test that lost some.
    findings.extend(
        HardeningFinding(test_id, 0, 0, titles.get(test_id, ""), tuple(texts))
        for test_id, texts in suggestions.items()
        if test_id not in points or points[test_id][0] == 0
    )
    findings.sort(key=lambda finding: (-finding.lost_points, finding.test_id))
    performed = values.get("lynis_tests_done", ["0"])[-1]
    return HardeningAudit(
        index=int(index_values[-1]),
        lynis_version=values.get("lynis_version", [""])[-1],
        tests_performed=int(performed) if performed.isdigit() else 0,
        findings=tuple(findings),
    )


def hardening_failure(audit: HardeningAudit, minimum: int) -> str | None:
    """The gate's message when the index is below `minimum`, else None."""
    if audit.index >= minimum:
        return None
    lines = [f"lynis hardening index {audit.index} is below verify.min_hardening_index {minimum}"]
    lines += [f"  {finding.summary()}" for finding in audit.lowest_scoring()]
    return "\n".join(lines)


class LynisCopyError(BakeryError):
    """The host's lynis is not the version whose copy the gate knows how to speed up."""


# Under QEMU's TCG a process start costs ~100 ms (about 400x this host; docs/hardening.md),
# and lynis forks `date` for every log line (~7,000 per audit) and `expr` for every
# binary its Debian plugin counts, and two `cut`s per installed package: most of a
# 25-minute audit. The gate's copy of lynis
# gets edits that change no test and no point (natively, an audit with and without them
# gave the same index and points per test: docs/hardening.md): the log's timestamp is
# taken once per test, and counts and fields come from the shell itself.
# (file in lynis's tarball layout, exact text, replacement)
LYNIS_SPEEDUPS: tuple[tuple[str, str, str], ...] = (
    (
        "include/functions",
        'then CDATE=$(date "+%Y-%m-%d %H:%M:%S"); echo "${CDATE} $1" >> ${LOGFILE}; fi',
        'then case $1 in "Performing test ID"*|Action:*) CDATE=$(date "+%Y-%m-%d %H:%M:%S");; '
        '*) : "${CDATE:=$(date "+%Y-%m-%d %H:%M:%S")}";; esac; '
        'echo "${CDATE} $1" >> ${LOGFILE}; fi',
    ),
    (
        "include/functions",
        '            CDATE=$(date "+%Y-%m-%d %H:%M:%S")\n            echo "${CDATE} ===="',
        '            echo "${CDATE:-} ===="',
    ),
    # Register, run for each of the ~470 tests (skipped ones too): its timestamp on Linux
    # by one `date` (not a subshell running GetTimestamp's own subshell), the old-style
    # skip-always list searched by the shell, and the test id upper-cased only when it
    # holds a lower-case letter (lynis's ids do not): ~6 forks fewer per test.
    (
        "include/functions",
        "        CURRENT_TS=$(GetTimestamp)\n",
        '        case ${OS} in Linux) CURRENT_TS=$(date "+%s%N");; '
        "*) CURRENT_TS=$(GetTimestamp);; esac\n",
    ),
    (
        "include/functions",
        '            FIND=$(echo "${TEST_SKIP_ALWAYS}" | grep "${TEST_NO}" | '
        "tr '[:lower:]' '[:upper:]')\n",
        '            case "${TEST_SKIP_ALWAYS}" in *"${TEST_NO}"*) FIND=$(echo '
        "\"${TEST_SKIP_ALWAYS}\" | grep \"${TEST_NO}\" | tr '[:lower:]' '[:upper:]');; "
        '*) FIND="";; esac\n',
    ),
    (
        "include/functions",
        "            VALUE=$(echo ${TEST_NO} | tr '[:lower:]' '[:upper:]')\n",
        "            case ${TEST_NO} in *[a-z]*) VALUE=$(echo ${TEST_NO} | "
        "tr '[:lower:]' '[:upper:]');; *) VALUE=${TEST_NO};; esac\n",
    ),
    # Display, for each of the ~600 result lines on the screen: the line's length (only
    # the padding before its `[ RESULT ]` depends on it) by the shell, not `wc -m`; the
    # same for ASCII text, one more than the characters as `echo | wc -m` counts.
    (
        "include/functions",
        '                LINESIZE=$(export LC_ALL= ; export LANG="${DISPLAY_LANG}";'
        "echo \"${TEXT}\" | wc -m | tr -d ' ')\n",
        "                LINESIZE=$((${#TEXT} + 1))\n",
    ),
    ("plugins/plugin_debian_phase1", "N=`expr ${N} + 1`", "N=$((N + 1))"),
    # Reading the profiles (~120 settings): the option name and the old-style test by the
    # shell, not `echo | cut` and `echo | grep` per setting.
    (
        "include/profiles",
        'if ContainsString "^config:" "${CONFIGOPTION}"; then',
        'if [ "${CONFIGOPTION#config:}" != "${CONFIGOPTION}" ]; then',
    ),
    (
        "include/profiles",
        "                OPTION=$(echo ${CONFIGOPTION} | cut -d '=' -f1)\n",
        "                OPTION=${CONFIGOPTION%%=*}\n",
    ),
    # NETW-2600: each of the ~150 net.ipv6 parameters' key and value, split by the shell.
    (
        "include/tests_networking",
        "                SYSCTL_KEY=$(echo ${I} | ${AWKBINARY} -F= '{ print $1 }')\n"
        "                SYSCTL_VALUE=$(echo ${I} | ${AWKBINARY} -F= '{ print $2 }')\n",
        "                SYSCTL_KEY=${I%%=*}; SYSCTL_VALUE=${I#*=}\n"
        "                SYSCTL_VALUE=${SYSCTL_VALUE%%=*}\n",
    ),
    # PKGS-7345: a package's name and version, cut from `ii,NAME,VERSION,...` by the shell.
    (
        "include/tests_ports_packages",
        "            PACKAGE_NAME=$(echo ${J} | ${CUTBINARY} -d ',' -f2)\n"
        "            PACKAGE_VERSION=$(echo ${J} | ${CUTBINARY} -d ',' -f3)\n",
        "            FIELDS=${J#*,}; PACKAGE_NAME=${FIELDS%%,*}\n"
        "            FIELDS=${FIELDS#*,}; PACKAGE_VERSION=${FIELDS%%,*}\n",
    ),
    # KRNL-6000: each of the ~80 sysctl pairs of default.prf (`config-data=sysctl;KEY;
    # VALUE|VALUE;POINTS;DESCRIPTION-space-WORDS;...`) split by the shell, not by ~25
    # forks of awk, tr, grep and sed; only the `sysctl -n` of each key is left.
    (
        "include/tests_kernel_hardening",
        '            FIND=$(${GREPBINARY} "^config-data=sysctl;" ${DEFAULT_PROFILE} | '
        "${SEDBINARY} 's/ /-space-/g')\n"
        "            for LINE in ${FIND}; do\n"
        "                SYSCTLKEY=$(echo ${LINE} | ${AWKBINARY} -F\\; '{ print $2 }')\n"
        '                HAS_KEY=$(echo ${DATA_TO_SCAN} | ${GREPBINARY} ";${SYSCTLKEY};")\n'
        '                if [ $? -gt 0 ]; then DATA_TO_SCAN="${DATA_TO_SCAN} ${LINE}"; fi\n',
        '            FIND=$(${GREPBINARY} "^config-data=sysctl;" ${DEFAULT_PROFILE} | '
        "${SEDBINARY} 's/ /-space-/g')\n"
        "            for LINE in ${FIND}; do\n"
        "                SYSCTLKEY=${LINE#*;}; SYSCTLKEY=${SYSCTLKEY%%;*}\n"
        '                case " ${DATA_TO_SCAN} " in *";${SYSCTLKEY};"*) ;; '
        '*) DATA_TO_SCAN="${DATA_TO_SCAN} ${LINE}";; esac\n',
    ),
    (
        "include/tests_kernel_hardening",
        "            tFINDkey=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $2 }')\n",
        "            tFINDkey=${line#*;}; tFINDkey=${tFINDkey%%;*}\n",
    ),
    (
        "include/tests_kernel_hardening",
        "                tFINDexpvalue=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $3 }' | "
        "${TRBINARY} '|' ' ')\n"
        "                tFINDhp=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $4 }' | "
        '${GREPBINARY} "[0-9]")\n'
        "                tFINDdesc=$(echo ${line} | ${AWKBINARY} -F\\; '{ print $5 }' | "
        "${SEDBINARY} 's/-space-/ /g')\n",
        "                KRNL_FIELDS=${line#*;}; KRNL_FIELDS=${KRNL_FIELDS#*;}\n"
        '                KRNL_REST=${KRNL_FIELDS%%;*}; tFINDexpvalue=""\n'
        '                while :; do tFINDexpvalue="${tFINDexpvalue}${KRNL_REST%%"|"*}"; '
        'case ${KRNL_REST} in *"|"*) tFINDexpvalue="${tFINDexpvalue} "; '
        'KRNL_REST=${KRNL_REST#*"|"};; *) break;; esac; done\n'
        "                KRNL_FIELDS=${KRNL_FIELDS#*;}; tFINDhp=${KRNL_FIELDS%%;*}\n"
        '                case ${tFINDhp} in *[0-9]*) ;; *) tFINDhp="";; esac\n'
        "                KRNL_FIELDS=${KRNL_FIELDS#*;}; KRNL_REST=${KRNL_FIELDS%%;*}; "
        'tFINDdesc=""\n'
        "                while :; do case ${KRNL_REST} in *-space-*) "
        'tFINDdesc="${tFINDdesc}${KRNL_REST%%-space-*} "; KRNL_REST=${KRNL_REST#*-space-};; '
        '*) tFINDdesc="${tFINDdesc}${KRNL_REST}"; break;; esac; done\n',
    ),
)
# What the gate's lynis reads as custom.prf beside default.prf (one reason per line).
LYNIS_GATE_PROFILE = (
    "# bakery's gate (docs/hardening.md): audit the image as baked. No `apt-get update`\n"
    "# first: the local guest has no network, an AWS one would measure the mirror of the\n"
    "# day, and the vulnerability gate checks pending security updates already.\n"
    "refresh-repositories=no\n"
    "# CRYP-7902 (expired certificates, no points) skips every certificate a package owns,\n"
    "# after a `dpkg -S` for each: 1.3 s apiece under TCG for the ~150 trust roots of\n"
    "# ca-certificates. Same list as default.prf without that package's folder.\n"
    "ssl-certificate-paths=/etc/apache2:/etc/dovecot:/etc/httpd:/etc/letsencrypt:/etc/pki:"
    "/etc/postfix:/etc/refind.d/keys:/etc/ssl:/opt/psa/var/certificates:"
    "/usr/local/psa/var/certificates:/usr/local/share/ca-certificates:/usr/share/gnupg:"
    "/var/www:/srv/www\n"
)


def speed_up_lynis(name: str, text: str) -> str:
    """`text` of lynis's file `name` with the gate's speed-ups applied; an error when an
    expected text is missing (another lynis version: re-check the edits against it)."""
    for file_name, old, new in LYNIS_SPEEDUPS:
        if file_name != name:
            continue
        if text.count(old) != 1:
            raise LynisCopyError(
                f"lynis's {name} does not hold exactly one {old[:60]!r}: this lynis is not "
                "the 3.0.8 the gate's speed-ups were written for; review LYNIS_SPEEDUPS in "
                "bakery/verify/hardening.py"
            )
        text = text.replace(old, new)
    return text
