"""The trio runtime: the writer (group commit), the runs of workflows, the hosts of
agents, timers, recovery and the operations behind the Agent API (specs/design.md)."""
