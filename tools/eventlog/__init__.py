"""eventlog: inspect, verify and time-travel an eventwf log from the command line.

Run ``python -m tools.eventlog PATH COMMAND`` from the repository root; every command has
``--help``. Requirements: specs/tools.md (V1-V18). Modules, one job each:

- ``source``: opening a log read-only and reading rows in short, bounded batches
- ``render``: times, durations, values, tables and JSON lines
- ``listing``: ``streams``, ``show``, ``tail [--follow]``
- ``timeline`` / ``timeline_view``: ``workflow ID``
- ``agentstate``: ``agent CLASS NAME [--at POSITION]``
- ``stats``: ``stats``
- ``verify`` / ``verify_view``: ``verify``
- ``check``: ``check MODULE:FACTORY``
- ``export``: ``export`` and ``rebuild-projections``
- ``synth``: a large synthetic log for measurements (``python -m tools.eventlog.synth``)
"""
