"""ISC's EDNS compliance tests (ednscomp.isc.org, RFC 8906 section 8), run with dig.

Each check is a dig command line and what a compliant authoritative answer looks like, as
ISC's genreport grades it: the status, an OPT of version 0, no echoed unknown option or
flag (MBZ), DO echoed, the SOA present or absent, a UDP answer within the advertised size.
Beyond ISC's list: the options authd added (cookie, BADCOOKIE, ZONEVERSION, keepalive,
EDE). `grade()` reads dig's text output and returns "ok" or the problems found, in
genreport's words.

`python -m tests.interop.edns_compliance HOST PORT ZONE` prints the table for one server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field

# A server cookie we never made: 8 octets of client cookie, 16 of a foreign server cookie.
FOREIGN_COOKIE = "0102030405060708" + "01000000" + "5cf79f11" + "1f8130c3eee29480"


@dataclass(frozen=True)
class Check:
    name: str
    args: tuple[str, ...]  # dig arguments besides server, port, name and type
    qtype: str = "SOA"
    status: str = "NOERROR"
    edns: bool = True  # an OPT (version 0) is expected in the answer
    soa: bool | None = True  # SOA in the answer section: expected, forbidden, or either
    do: bool = False  # DO must be echoed
    options: tuple[str, ...] = ()  # dig's pseudosection lines that must appear
    absent: tuple[str, ...] = field(default=())  # ... and must not
    name_prefix: str = ""  # asked under the zone ("nope." for an out-of-zone name: see below)
    bufsize: int = 0  # the UDP answer must fit in this many octets
    outside: bool = False  # ask a name outside the zone


CHECKS: tuple[Check, ...] = (
    # ISC's list (genreport), in its order.
    Check("dns", ("+noedns",), edns=False),
    Check("aa", ("+noedns", "+aaflag"), edns=False),
    Check("ad", ("+noedns", "+adflag"), edns=False),
    Check("cd", ("+noedns", "+cdflag"), edns=False),
    Check("ra", ("+noedns", "+raflag"), edns=False),
    Check("rd", ("+noedns", "+rdflag"), edns=False),
    Check("tc", ("+noedns", "+tcflag"), edns=False),
    Check("zflag", ("+noedns", "+zflag"), edns=False, absent=("MBZ",)),
    Check(
        "opcode", ("+noedns", "+opcode=15", "+header-only"), status="NOTIMP", edns=False, soa=None
    ),
    Check(
        "opcodeflg",
        (
            "+noedns",
            "+opcode=15",
            "+header-only",
            "+tcflag",
            "+rdflag",
            "+raflag",
            "+cdflag",
            "+adflag",
            "+zflag",
        ),
        status="NOTIMP",
        edns=False,
        soa=None,
    ),
    Check("type666", ("+noedns",), qtype="TYPE666", edns=False, soa=False),
    Check("tcp", ("+noedns", "+tcp"), edns=False),
    Check("edns", ("+edns=0", "+nocookie")),
    Check("edns1", ("+edns=1", "+noednsneg", "+nocookie"), status="BADVERS", soa=False),
    Check(
        "edns@512",
        ("+edns=0", "+nocookie", "+dnssec", "+bufsize=512", "+ignore"),
        qtype="TXT",
        name_prefix="big.",
        soa=None,
        do=True,
        bufsize=512,
    ),
    Check("ednsopt", ("+edns=0", "+nocookie", "+ednsopt=100"), absent=("OPT=100",)),
    Check(
        "edns1opt",
        ("+edns=1", "+noednsneg", "+nocookie", "+ednsopt=100"),
        status="BADVERS",
        soa=False,
        absent=("OPT=100",),
    ),
    Check("do", ("+edns=0", "+nocookie", "+dnssec"), do=True),
    Check("docd", ("+edns=0", "+nocookie", "+dnssec", "+cdflag"), do=True),
    Check(
        "edns1do",
        ("+edns=1", "+noednsneg", "+nocookie", "+dnssec"),
        status="BADVERS",
        soa=False,
        do=True,
    ),
    Check("ednsflags", ("+edns=0", "+nocookie", "+ednsflags=0x80"), absent=("MBZ",)),
    Check(
        "optlist",
        ("+edns=0", "+nsid", "+subnet=0.0.0.0/0", "+expire", "+cookie"),
        options=("NSID:", "COOKIE:"),
    ),
    Check("ednstcp", ("+edns=0", "+nocookie", "+tcp")),
    Check("cookie", ("+edns=0", "+cookie"), options=("COOKIE:",)),
    Check("docookie", ("+edns=0", "+cookie", "+dnssec"), options=("COOKIE:",), do=True),
    # Beyond ISC's list: what authd added.
    Check("clientcookie", ("+edns=0", "+cookie", "+nobadcookie"), options=("COOKIE:",)),
    Check(
        "badcookie",
        ("+edns=0", f"+cookie={FOREIGN_COOKIE}", "+nobadcookie", "+showbadcookie"),
        status="BADCOOKIE",
        soa=False,
        options=("COOKIE:",),
    ),
    Check("badcookie-tcp", ("+edns=0", f"+cookie={FOREIGN_COOKIE}", "+tcp"), options=("COOKIE:",)),
    Check("shortcookie", ("+edns=0", "+ednsopt=10:01020304"), status="FORMERR", soa=None),
    Check("zoneversion", ("+edns=0", "+nocookie", "+ednsopt=19"), options=("OPT=19: 02 00",)),
    Check("keepalive", ("+edns=0", "+nocookie", "+tcp", "+keepalive"), options=("TCP KEEPALIVE:",)),
    Check(
        "ede-refused",
        ("+edns=0", "+nocookie"),
        status="REFUSED",
        soa=False,
        outside=True,
        options=("EDE: 20",),
    ),
    Check(
        "ede-opcode",
        ("+edns=0", "+nocookie", "+opcode=15", "+header-only"),
        status="NOTIMP",
        soa=None,
        options=("EDE: 21",),
    ),
)

_STATUS = re.compile(r"status: ([A-Z0-9]+)")
_EDNS = re.compile(r"; EDNS: version: (\d+), flags:([^;]*);")


def dig_command(check: Check, host: str, port: int, zone: str, dig: str = "dig") -> list[str]:
    name = "outside.invalid." if check.outside else check.name_prefix + zone
    return [
        dig,
        f"@{host}",
        "-p",
        str(port),
        "+norec",
        "+tries=1",
        "+time=2",
        *check.args,
        name,
        check.qtype,
    ]


def grade(check: Check, output: str, size: int | None = None) -> str:
    """ "ok", or the problems in ISC's words (status, noopt, version, echoed, mbz, nodo,
    soa, nosoa, toobig), plus "no <option>" for our own checks."""
    problems: list[str] = []
    status = _STATUS.search(output)
    if status is None:
        return "timeout"
    if status.group(1) != check.status:
        problems.append(f"status={status.group(1)}")
    edns = _EDNS.search(output)
    if check.edns and edns is None:
        problems.append("noopt")
    if not check.edns and edns is not None:
        problems.append("opt")
    if edns is not None:
        if edns.group(1) != "0":
            problems.append("version")
        if check.do and "do" not in edns.group(2).split():
            problems.append("nodo")
    answer = output.split(";; ANSWER SECTION:", 1)[1] if ";; ANSWER SECTION:" in output else ""
    answer = answer.split("\n\n", 1)[0]
    has_soa = "\tSOA\t" in answer
    if check.soa is True and not has_soa:
        problems.append("nosoa")
    if check.soa is False and has_soa:
        problems.append("soa")
    for needed in check.options:
        if not any(line.startswith("; " + needed) for line in output.splitlines()):
            problems.append(f"no {needed.rstrip(':')}")
    for forbidden in check.absent:
        if f"; {forbidden}" in output:
            problems.append("mbz" if forbidden == "MBZ" else "echoed")
    if check.bufsize and size is not None and size > check.bufsize:
        problems.append("toobig")
    return ",".join(problems) or "ok"


_SIZE = re.compile(r";; MSG SIZE\s+rcvd: (\d+)")


def run(check: Check, host: str, port: int, zone: str, dig: str = "dig") -> str:
    done = subprocess.run(
        dig_command(check, host, port, zone, dig), capture_output=True, text=True, timeout=20
    )
    size = _SIZE.search(done.stdout)
    return grade(check, done.stdout, int(size.group(1)) if size else None)


def main(argv: list[str]) -> int:
    host, port, zone = argv[0], int(argv[1]), argv[2]
    for check in CHECKS:
        print(f"{check.name:14} {run(check, host, port, zone)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
