"""`python -m authd.bench` / `authd bench`: the click commands (thin: parse, call runner, print)."""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import click

from authd.bench import drivers, mix, report, runner, zonegen
from authd.bench.results import ServerRun

QUICK_MIXES = ("hits", "mixed")
QUICK_SERVERS = ("authd", "knot")


def parse_target(text: str) -> tuple[str, int]:
    """HOST:PORT, HOST@PORT or [IPv6]:PORT; the port defaults to 53."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":@") or "53"
    elif "@" in text:
        host, _, port = text.partition("@")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise click.BadParameter(
            f"expected IP:PORT, IP@PORT or [IPv6]:PORT, got {text!r}"
        ) from None
    if not 0 < number < 65536:
        raise click.BadParameter(f"port out of range in {text!r}")
    return host, number


def parse_cpus(text: str) -> frozenset[int]:
    """A taskset-style list: "1", "0,2", "2-3"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            if "-" in part:
                low, high = part.split("-", 1)
                cpus.update(range(int(low), int(high) + 1))
            elif part.strip():
                cpus.add(int(part))
    except ValueError:
        raise click.BadParameter(
            f"expected a CPU list like 1 or 0,2 or 2-3, got {text!r}"
        ) from None
    return frozenset(cpus)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


class _Progress:
    """One status line on stderr, rewritten in place on a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.width = 0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            padded = message.ljust(self.width)
            self.width = len(message)
            click.echo(f"\r{padded}", err=True, nl=False)
        else:
            click.echo(message, err=True)

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            click.echo("\r" + " " * self.width + "\r", err=True, nl=False)


@click.group(name="bench")
def bench() -> None:
    """Load-test authd and its peers (knotd, nsd), or a running server, with query mixes."""


@bench.command(name="run")
@click.option(
    "--mix",
    "mixes",
    default="hits,mixed",
    show_default=True,
    help=f"Comma-separated mixes: {', '.join(mix.PRESETS)}, custom.",
)
@click.option(
    "--servers",
    default="authd,knot,nsd",
    show_default=True,
    help="Servers to start and compare (those not installed are skipped).",
)
@click.option(
    "--target", help="Load an already running server at IP:PORT instead of starting peers."
)
@click.option(
    "--server-pid", type=int, help="With --target on this machine: its PID, for CPU figures."
)
@click.option(
    "--zone",
    "zone_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Zone file to serve and draw questions from (default: a generated zone).",
)
@click.option(
    "--origin", default=zonegen.DEFAULT_ORIGIN, show_default=True, help="The zone's name."
)
@click.option(
    "--names", default=zonegen.DEFAULT_NAMES, show_default=True, help="Names in the generated zone."
)
@click.option("--axfr", is_flag=True, help="With --target: take the zone from it by AXFR.")
@click.option(
    "--listen",
    default="",
    help="Address the servers listen on (default: 127.0.0.1, where the load goes); "
    "0.0.0.0 or :: measures a wildcard listen (load to 127.0.0.1 or ::1).",
)
@click.option("--duration", default=5.0, show_default=True, help="Seconds of each saturation run.")
@click.option(
    "--latency-duration",
    default=3.0,
    show_default=True,
    help="Seconds of each fixed-rate latency run (at 50% of saturation).",
)
@click.option("--no-latency", is_flag=True, help="Skip the latency runs.")
@click.option("--workers", default=1, show_default=True, help="Workers / threads of each server.")
@click.option(
    "--server-cpus", help="CPUs the servers are pinned to (default: the cores after the client's)."
)
@click.option("--client-cpus", help="CPUs the load client is pinned to (default: the first core).")
@click.option(
    "--driver",
    type=click.Choice(["auto", "dnsperf", "builtin"]),
    default="auto",
    show_default=True,
    help="auto = dnsperf when installed and the mix allows it.",
)
@click.option(
    "--count", default=200_000, show_default=True, help="Queries per mix before it repeats."
)
@click.option("--outstanding", default=100, show_default=True, help="Queries in flight at most.")
@click.option("--weights", help='The "custom" mix, e.g. "hits=60,nxdomain=30,nodata=5,wildcard=5".')
@click.option(
    "--do-share", default=0.0, show_default=True, help="Custom mix: share of DO=1 queries."
)
@click.option(
    "--tcp-share", default=0.0, show_default=True, help="Custom mix: share of TCP queries."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep zones, configs, query files and server logs here (default: a temp dir).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A ~20 s smoke comparison: hits + mixed, authd vs knotd, short runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def run_command(
    mixes: str,
    servers: str,
    target: str | None,
    server_pid: int | None,
    zone_file: Path | None,
    origin: str,
    names: int,
    axfr: bool,
    listen: str,
    duration: float,
    latency_duration: float,
    no_latency: bool,
    workers: int,
    server_cpus: str | None,
    client_cpus: str | None,
    driver: str,
    count: int,
    outstanding: int,
    weights: str | None,
    do_share: float,
    tcp_share: float,
    workdir: Path | None,
    quick: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Measure qps, lost queries, server CPU time, qps per CPU-second and p50/p99 latency."""
    if not origin.endswith("."):
        origin += "."
    if quick:
        mixes, servers = ",".join(QUICK_MIXES), ",".join(QUICK_SERVERS)
        duration, latency_duration, count = 2.0, 1.0, 50_000
    if duration <= 0 or duration > 600 or latency_duration <= 0 or latency_duration > 600:
        raise click.BadParameter("durations must be between 0 and 600 seconds")
    custom: dict[str, mix.Preset] = {}
    try:
        if weights:
            spec = mix.MixSpec(mix.parse_weights(weights), do_share, tcp_share)
            custom["custom"] = mix.Preset(spec, "plain", f"custom: {weights}")
    except mix.MixError as error:
        raise click.BadParameter(str(error)) from None
    default_server, default_client = runner.default_cpus(workers)
    parsed_target = None
    if target is not None:
        host, port = parse_target(target)
        parsed_target = runner.Target(host, port, server_pid)
        if not ipaddress.ip_address(host).is_loopback:
            click.echo(f"note: sending load to {host}, a non-loopback address", err=True)
    elif axfr:
        raise click.BadParameter("--axfr needs --target")
    host = "127.0.0.1"
    if listen:
        try:
            address = ipaddress.ip_address(listen)
        except ValueError:
            raise click.BadParameter(f"--listen {listen!r} is not an IP address") from None
        if not (address.is_loopback or address.is_unspecified):
            raise click.BadParameter("--listen must be a loopback or wildcard address")
        host = "::1" if address.version == 6 else "127.0.0.1"
    own_workdir = workdir is None
    base = workdir or Path(tempfile.mkdtemp(prefix="authd-bench-"))
    plan = runner.Plan(
        mixes=_split(mixes),
        servers=_split(servers),
        workdir=base,
        seconds=duration,
        latency_seconds=latency_duration,
        latency=not no_latency,
        workers=workers,
        server_cpus=parse_cpus(server_cpus) if server_cpus else default_server,
        client_cpus=parse_cpus(client_cpus) if client_cpus else default_client,
        driver=driver,
        count=count,
        outstanding=outstanding,
        zone=zone_file,
        origin=origin,
        names=names,
        target=parsed_target,
        axfr=axfr,
        custom=custom,
        host=host,
        listen=listen,
    )
    progress = _Progress(not quiet)
    try:
        results: list[ServerRun] = runner.run(plan, progress)
    except (mix.MixError, zonegen.SigningError, drivers.DnsperfError) as error:
        progress.done()
        raise click.ClickException(str(error)) from None
    finally:
        if own_workdir:
            shutil.rmtree(base, ignore_errors=True)
    progress.done()
    command_line = "python -m authd.bench " + shlex.join(sys.argv[1:])
    if as_json:
        click.echo(report.as_json(results, runner.machine(), command_line))
    elif results:
        click.echo(report.table(results))
    if not results:
        message = "nothing measured: none of the servers could be started"
        if quick:
            click.echo(f"{message} (quick mode: not an error)", err=True)
            return
        raise click.ClickException(message)


@bench.command(name="mix")
@click.option(
    "--zone",
    "zone_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The zone file to draw questions from.",
)
@click.option("--origin", default=None, help="The zone's name (default: from the file's $ORIGIN).")
@click.option(
    "--mix",
    "mix_name",
    default="mixed",
    show_default=True,
    type=click.Choice(list(mix.PRESETS)),
    help="Which preset's proportions to use.",
)
@click.option("--weights", help='Override the proportions, e.g. "hits=80,nxdomain=20".')
@click.option("--count", default=200_000, show_default=True, help="Number of queries.")
@click.option("--seed", default=1, show_default=True, help="Random seed (same seed, same mix).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The dnsperf input file to write.",
)
def mix_command(
    zone_file: Path,
    origin: str | None,
    mix_name: str,
    weights: str | None,
    count: int,
    seed: int,
    output: Path,
) -> None:
    """Write a query mix in dnsperf's input format (and say which dnsperf flags it needs)."""
    preset = mix.PRESETS[mix_name]
    try:
        spec = preset.spec
        if weights:
            spec = mix.MixSpec(mix.parse_weights(weights), spec.do_share, spec.tcp_share)
        inventory = mix.inventory_from_file(zone_file, origin)
        queries = mix.generate(inventory, spec, count, seed)
    except mix.MixError as error:
        raise click.ClickException(str(error)) from None
    mix.write_dnsperf_file(queries, output)
    flags = ["-e"]
    if spec.do_share >= 1.0:
        flags.append("-D")
    if spec.tcp_share >= 1.0:
        flags += ["-m", "tcp"]
    click.echo(
        f"wrote {len(queries)} queries to {output}; run: dnsperf {' '.join(flags)} -d {output}"
    )


_PASS_THROUGH = {"ignore_unknown_options": True, "help_option_names": []}


@bench.command(name="memory", context_settings=_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def memory(args: tuple[str, ...]) -> None:
    """Bytes per record of a large zone served, authd vs knotd (--help: options)."""
    from authd.bench.measure_memory import main

    raise SystemExit(main(list(args)))


@bench.command(name="startup", context_settings=_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def startup(args: tuple[str, ...]) -> None:
    """Time to the first answer from a stored 1M-record copy, vs knotd (--help: options)."""
    from authd.bench.measure_startup import main

    raise SystemExit(main(list(args)))


@bench.command(name="zones")
@click.option("--count", default=1000, show_default=True, help="Zones on the secondary.")
@click.option(
    "--servers",
    default="authd,knot,nsd",
    show_default=True,
    help="Secondaries to measure, one after the other (those not installed are skipped).",
)
@click.option("--workers", default=1, show_default=True, help="Workers / threads of each server.")
@click.option(
    "--idle-seconds", default=60.0, show_default=True, help="Length of the idle-CPU measure."
)
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    help="Seconds each phase may take before it is reported as timed out.",
)
@click.option(
    "--add", default=100, show_default=True, help="Zones added (then removed) at runtime."
)
@click.option(
    "--skip",
    default="",
    help="Comma-separated phases to leave out: idle, memory, qps, storm, add, restart.",
)
@click.option(
    "--duration", default=5.0, show_default=True, help="Seconds of the query-mix saturation run."
)
@click.option(
    "--queries", default=100_000, show_default=True, help="Queries in the mix over all zones."
)
@click.option(
    "--probe-rate",
    default=4000.0,
    show_default=True,
    help="SOA queries per second at most while waiting for zones to be served.",
)
@click.option(
    "--loop-rate",
    default=500.0,
    show_default=True,
    help="Queries per second to the other zones while zones are added or removed.",
)
@click.option(
    "--restart-window",
    default=15.0,
    show_default=True,
    help="Seconds after a restart (primary up) during which its SOA queries are counted.",
)
@click.option(
    "--grace", default=10.0, show_default=True, help="Seconds between SIGTERM and SIGKILL."
)
@click.option(
    "--server-cpus", help="CPUs the secondaries are pinned to (default: the cores after the first)."
)
@click.option(
    "--client-cpus", help="CPUs of the harness, the primary and the load client (default: first)."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep zones, configs and server logs here (default: a temp dir, removed afterwards).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option(
    "--json-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON form to this file.",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
def zones_command(
    count: int,
    servers: str,
    workers: int,
    idle_seconds: float,
    timeout: float,
    add: int,
    skip: str,
    duration: float,
    queries: int,
    probe_rate: float,
    loop_rate: float,
    restart_window: float,
    grace: float,
    server_cpus: str | None,
    client_cpus: str | None,
    workdir: Path | None,
    as_json: bool,
    json_file: Path | None,
    quiet: bool,
) -> None:
    """Many small zones on one secondary: first load, idle CPU, memory, qps, NOTIFY storm,
    runtime add/remove and restart, for authd, knotd and NSD (issue 15)."""
    from authd.bench import zones, zones_report

    default_server, default_client = runner.default_cpus(workers)
    own_workdir = workdir is None
    base = workdir or Path(tempfile.mkdtemp(prefix="authd-zones-"))
    try:
        plan = zones.Plan(
            count=count,
            servers=_split(servers),
            workdir=base,
            workers=workers,
            idle_seconds=idle_seconds,
            timeout=timeout,
            add=add,
            skip=frozenset(_split(skip)),
            qps_seconds=duration,
            queries=queries,
            probe_rate=probe_rate,
            loop_rate=loop_rate,
            restart_window=restart_window,
            grace=grace,
            server_cpus=parse_cpus(server_cpus) if server_cpus else default_server,
            client_cpus=parse_cpus(client_cpus) if client_cpus else default_client,
        )
    except ValueError as error:
        if own_workdir:
            shutil.rmtree(base, ignore_errors=True)
        raise click.BadParameter(str(error)) from None
    progress = _Progress(not quiet)
    try:
        results = zones.run(plan, progress)
    finally:
        progress.done()
        if own_workdir:
            shutil.rmtree(base, ignore_errors=True)
    command_line = "python -m authd.bench " + shlex.join(sys.argv[1:])
    settings = {
        "count": count,
        "servers": list(plan.servers),
        "workers": workers,
        "idle_seconds": idle_seconds,
        "timeout": timeout,
        "add": add,
        "skip": sorted(plan.skip),
        "duration": duration,
        "queries": queries,
        "probe_rate": probe_rate,
        "loop_rate": loop_rate,
        "restart_window": restart_window,
    }
    document = zones_report.as_json(results, settings, runner.machine(), command_line)
    if json_file is not None:
        json_file.write_text(document + "\n")
    if as_json:
        click.echo(document)
    else:
        click.echo(f"{count:,} zones; {command_line}")
        idle = None if "idle" in plan.skip else idle_seconds
        click.echo(zones_report.table(results, idle, None if "add" in plan.skip else add))
