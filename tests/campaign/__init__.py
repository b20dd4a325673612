"""The crash, fault and bad-input campaign harness (specs/guarantees.md).

One job per module:

- ``ledger``: step executions, engine opens and callback deliveries, in a separate SQLite
  file written in autocommit mode *before* a step body returns (survives SIGKILL).
- ``service``: a fake external service keyed by idempotency key (oracle O6).
- ``history``: the client's fsync'd record of invoked and acknowledged operations (O1).
- ``programs``: seeded random workflow programs, the workflow that runs them, and a pure
  model of every workflow's outcome (O7).
- ``workload``: the async client + engine session that runs a plan (in a worker process
  or in-process under ``MockClock``).
- ``worker`` / ``zygote``: a worker process, and a pre-imported fork server that starts
  worker processes in milliseconds so kill loops spend their time on the workload.
- ``checker``: pure oracles O1-O9 and O12 over the final log, ledger, service and history.
- ``driver``: start/kill/restart loops with seeds, summaries and the final check.
"""
