"""Storage: the only code that touches a database (specs/design.md, rule D2)."""
