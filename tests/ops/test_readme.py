"""The README's runnable shell blocks, run against a live server so the docs cannot rot.

Convention: a fenced block whose info string is `sh run` is run; any other block is not
(Docker, systemctl, anything needing root or the network). Blocks are written for the
default config (authd.toml in the current directory, 127.0.0.1@5300, metrics on 9853).
Each runs with bash -eo pipefail, in order, as its own test case, in a directory holding
that config with free ports substituted for 5300 and 9853, the example zone and keys/,
while `authd serve` runs there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.ops.conftest import REPO, VENV_BIN, LiveServer, start_server, stop_server
from tests.support.system import require_binary

README = REPO / "README.md"
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
RUN_INFO = "sh run"
BLOCK_TIMEOUT = 60
# Programs a block may call that are not part of authd: skipped (or failed in CI) if missing.
EXTERNAL_PROGRAMS = ("dig", "kdig", "curl", "jq", "wget", "named-checkzone", "ldns-signzone")

SAMPLE = """\
# Sample

```sh run
authd check-config -c authd.toml
```

Not run (it needs root):

```sh
systemctl reload authd
```

~~~sh run
dig @127.0.0.1 -p 5300 example.test SOA +short | grep -q 2026112201
authd zone status | head -1
curl -sf http://127.0.0.1:9853/readyz
~~~

````markdown
```sh run
this block is inside another one and is not run
```
````

```sh  run
authd zone status --json | python3 -c 'import json,sys; assert json.load(sys.stdin)[0]["serial"]'
```
"""


@dataclass(frozen=True)
class Block:
    source: str
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}"


def runnable_blocks(markdown: str, source: str) -> list[Block]:
    """The `sh run` fenced blocks (CommonMark fences: ``` or ~~~, closed by a longer-or-equal
    fence of the same character; blocks nested inside a longer fence are content)."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening.group("fence")
        info = " ".join(opening.group("info").split())
        start = index + 1
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if (
                closing is not None
                and closing.group("fence")[0] == fence[0]
                and len(closing.group("fence")) >= len(fence)
                and not closing.group("info").strip()
            ):
                break
            body.append(lines[index])
            index += 1
        if info == RUN_INFO:
            blocks.append(Block(source, start, "\n".join(body)))
        index += 1
    return blocks


def test_runnable_blocks_are_found_by_the_convention() -> None:
    blocks = runnable_blocks(SAMPLE, "sample")
    assert [block.code.splitlines()[0] for block in blocks] == [
        "authd check-config -c authd.toml",
        "dig @127.0.0.1 -p 5300 example.test SOA +short | grep -q 2026112201",
        "authd zone status --json | python3 -c 'import json,sys; "
        'assert json.load(sys.stdin)[0]["serial"]\'',
    ]
    assert len(blocks[1].code.splitlines()) == 3
    assert [block.line for block in blocks] == [3, 13, 25]


def adapt(code: str, server: LiveServer) -> str:
    """The block as written for the default config, pointed at the test server's ports."""
    code = re.sub(r"(?<![\d])5300(?![\d])", str(server.port), code)
    return re.sub(r"(?<![\d])9853(?![\d])", str(server.metrics_port), code)


def run_block(block: Block, server: LiveServer) -> None:
    words = set(re.findall(r"[\w.-]+", block.code))
    for program in EXTERNAL_PROGRAMS:
        if program in words:
            require_binary(program)
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", adapt(block.code, server)],
        cwd=server.directory,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.id} exited {result.returncode}\n--- block\n{block.code}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
        f"--- server log\n{server.stderr()[-2000:]}"
    )


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The default config's server, with keys/ beside it as in the repo."""
    directory = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "keys", directory / "keys")
    server = start_server(directory)
    try:
        yield server
    finally:
        stop_server(server)


def blocks_of_readme() -> list[Block]:
    return runnable_blocks(README.read_text(), "README.md") if README.exists() else []


@pytest.mark.parametrize("block", runnable_blocks(SAMPLE, "sample"), ids=lambda b: b.id)
def test_sample_block_runs(block: Block, docs_server: LiveServer) -> None:
    run_block(block, docs_server)


def test_a_failing_block_fails(docs_server: LiveServer) -> None:
    with pytest.raises(AssertionError, match="exited 1"):
        run_block(Block("sample", 1, "authd zone status no-such.zone"), docs_server)


@pytest.mark.parametrize("block", blocks_of_readme(), ids=lambda b: b.id)
def test_readme_block_runs(block: Block, docs_server: LiveServer) -> None:
    run_block(block, docs_server)
