"""Assurance on demand (issue 13): would the extra NS set carry the domain without the provider?

operators.py  NS names grouped by operator (registered domain, address prefix, labels)
report.py     the provider-independence report: findings and verdict lines (pure)
drill.py      the provider-loss drill's checks on answers from authd's own addresses (pure)
text.py       the text forms the CLI prints
probe.py      bounded DNS queries to configured addresses only (the I/O)
run.py        gathers the answers and runs both (the daemon's `report` and `drill` commands)
"""
