"""``python -m tools.eventlog``: the log tool from a clone, kept for the scripts and docs
that name it. The tool itself is :mod:`eventwf.logtool` (installed as ``eventwf log``);
this package adds only ``synth``, a large synthetic log for measurements
(``python -m tools.eventlog.synth``).
"""
