"""named (BIND 9.18) as an XoT primary: DNS over TLS only, transfers only over TLS with TSIG.

named gets no plain listener at all (`listen-on { none; }`), so nothing can reach it in clear:
a secondary that fell back to plain TCP or UDP would find no one to talk to. Its certificate
comes from the test's own CA (tests/tls_certs.py). Started on a free loopback port, waited for
over TLS, stopped by PID (RunningServer).
"""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from authd.bench.primaries import KEY, START_TIMEOUT, write_zone
from authd.bench.servers import HOST, RunningServer
from tests.support.system import free_port
from tests.support.tls_certs import Issued, TestPki

TLS_NAME = "xot"  # the name of named's `tls` block


def named_xot_config(
    workdir: Path,
    tls_port: int,
    server: Issued,
    zones: dict[str, Path],
    notify: Sequence[tuple[str, int]],
) -> str:
    notify_targets = "".join(f"{h} port {p}; " for h, p in notify)
    notify_opts = f"notify explicit; also-notify {{ {notify_targets}}};" if notify else "notify no;"
    zone_blocks = "".join(
        f'zone "{z}" {{ type primary; file "{p}"; '
        f'allow-transfer port {tls_port} transport tls {{ key "{KEY.name}"; }}; '
        f"ixfr-from-differences yes; {notify_opts} }};\n"
        for z, p in zones.items()
    )
    # NOTIFY to the secondary is signed with KEY (a `server` clause), and goes over UDP.
    servers = "".join(
        f'server {h} {{ keys {{ "{KEY.name}"; }}; }};\n' for h in {h for h, _ in notify}
    )
    return f"""key "{KEY.name}" {{ algorithm {KEY.algorithm}; secret "{KEY.secret}"; }};
tls {TLS_NAME} {{
    cert-file "{server.cert_file}";
    key-file "{server.key_file}";
    protocols {{ TLSv1.3; }};
}};
options {{
    directory "{workdir}";
    pid-file "{workdir}/named.pid";
    session-keyfile "{workdir}/session.key";
    listen-on {{ none; }};
    listen-on-v6 {{ none; }};
    listen-on port {tls_port} tls {TLS_NAME} {{ {HOST}; }};
    recursion no;
    dnssec-validation no;
    notify-source {HOST};
    transfer-source {HOST};
}};
controls {{ }};
{servers}{zone_blocks}"""


def tls_soa(
    host: str, port: int, zone: str, pki: TestPki, name: str, timeout: float = 1.0
) -> dns.message.Message | None:
    """One SOA query over TLS (ALPN dot), the certificate checked against `pki` and `name`."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["dot"])
    message = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
    message.flags &= ~dns.flags.RD
    try:
        return dns.query.tls(
            message, host, port=port, timeout=timeout, ssl_context=context, server_hostname=name
        )
    except (OSError, dns.exception.DNSException):
        return None


@dataclass
class XotPrimary:
    named: str
    workdir: Path
    pki: TestPki
    server_cert: Issued
    server_name: str
    zone: str
    notify: Sequence[tuple[str, int]]
    tls_port: int = 0
    server: RunningServer | None = None

    @property
    def zone_file(self) -> Path:
        return self.workdir / f"{self.zone}.db"

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.tls_port)

    def start(self, serial: int, names: int) -> XotPrimary:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_zone(self.zone_file, self.zone, serial, names=names)
        self.tls_port = free_port(HOST)
        conf = self.workdir / "named.conf"
        conf.write_text(
            named_xot_config(
                self.workdir,
                self.tls_port,
                self.server_cert,
                {self.zone: self.zone_file},
                self.notify,
            )
        )
        log_path = self.workdir / "named.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [self.named, "-g", "-n", "1", "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self.server = RunningServer("named", process, HOST, self.tls_port, self.workdir, log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while self.serial() != serial:
            if process.poll() is not None or time.monotonic() > deadline:
                text = self.log()
                self.stop()
                raise RuntimeError(f"named did not serve {self.zone} over TLS:\n{text}")
            time.sleep(0.1)
        return self

    def serial(self) -> int | None:
        answer = tls_soa(HOST, self.tls_port, self.zone, self.pki, self.server_name)
        if answer is None or answer.rcode() != dns.rcode.NOERROR or not answer.answer:
            return None
        return int(answer.answer[0][0].serial)

    def change(self, serial: int, names: int) -> None:
        """A new version of the zone file, then a reload (SIGHUP): named computes the IXFR
        diff (ixfr-from-differences) and sends NOTIFY."""
        write_zone(self.zone_file, self.zone, serial, names=names)
        assert self.server is not None
        self.server.reload()

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
