"""The pure model: values, events and their codec, the folds and the replay decisions.

Nothing here does I/O: no trio, no sqlite, no clock (specs/design.md, rule D1). Every
other layer builds on it; it imports only ``eventwf.errors``.
"""
