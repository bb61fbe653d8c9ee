"""Assurance on demand (issue 13): would the extra NS set carry the domain without the provider?

- operators.py: NS names grouped by operator (registered domain, address prefix, labels)
- report.py: the provider-independence report: findings and verdict lines (pure)
- drill.py: the provider-loss drill's checks on answers from authd's own addresses (pure)
- text.py: the text forms the CLI prints
- probe.py: one bounded DNS query, under a per-run budget (the I/O)
- gather.py: what to ask whom (peers, parent, resolver, own addresses), answers as values
- run.py: runs both, gather then judge (the daemon's `report` and `drill` commands)

And continuously (items 3 and 4 as periodic, alerted checks):
- watch.py: per zone, what the drift and delegation rounds found, and their pacing (pure)
- periodic.py: the rounds, as wake-ups in the one scheduler of all zones (the I/O)
- dscheck.py: the DS check on every transfer (ds-check): the parent's DS, cached for its TTL,
  as the verification's trust anchors, and the anchor failure named ds-mismatch
"""
