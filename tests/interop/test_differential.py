"""The differential suite: every corpus query, over UDP and TCP, knotd versus authd.

A failure names the query and shows each difference and both responses. The accepted
differences are listed (with their reasons) in tests/interop/compare.py's docstring and in
ALLOWED_REASONS; everything else must be identical.
"""

from __future__ import annotations

from collections import Counter

import pytest

from authd.bench.servers import RunningServer
from tests.interop.compare import ALLOWED_REASONS, render, unexplained
from tests.interop.corpus import CORPUS, Query
from tests.interop.exchange import Outcome

pytestmark = pytest.mark.interop
EXAMPLES_PER_REASON = 20


@pytest.mark.parametrize("query", CORPUS, ids=[q.qid for q in CORPUS])
def test_same_response(query: Query, differential_outcomes: dict[str, list[Outcome]]) -> None:
    outcomes = differential_outcomes[query.qid]
    assert {o.transport for o in outcomes} == {"udp", "tcp"}
    failures = [
        render(o.query, o.transport, o.ref_wire, o.sut_wire, o.diffs)
        for o in outcomes
        if unexplained(o.diffs)
    ]
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_summary(
    differential_outcomes: dict[str, list[Outcome]], sut_server: RunningServer
) -> None:
    """Prints what was compared; fails when any difference is unexplained."""
    outcomes = [o for group in differential_outcomes.values() for o in group]
    allowed = Counter(d.allowed for o in outcomes for d in o.diffs if d.allowed)
    failing = sorted({o.query.qid for o in outcomes if unexplained(o.diffs)})
    answered = sum(1 for o in outcomes if o.ref_wire is not None)
    print(
        f"\ninterop: {len(differential_outcomes)} queries, {len(outcomes)} exchanges "
        f"(knotd answered {answered}) against {sut_server.name}; "
        f"{len(failing)} queries with unexplained differences"
    )
    for reason in ALLOWED_REASONS:
        print(f"  allowed x{allowed[reason]}: {reason}")
        examples = sorted({o.query.qid for o in outcomes for d in o.diffs if d.allowed == reason})
        for qid in examples[:EXAMPLES_PER_REASON]:
            print(f"    e.g. {qid}")
    for qid in failing:
        print(f"  DIFF {qid}")
    # The corpus really exercises the servers: most queries get an answer from knotd.
    assert answered > 0.9 * len(outcomes)
    assert not failing, f"{len(failing)} queries differ; see test_same_response[...] failures"
