"""``LogLocation``: a log's location that prints without its password (console CN11, CN15)."""

from __future__ import annotations

from eventwf.store.location import LogLocation, without_password


def test_a_url_prints_without_its_password_but_reopens_with_it() -> None:
    url = "postgresql://ops:s3cr%40t@db.internal:5432/app?sslmode=require"
    location = LogLocation(url)
    assert location.is_url and location.reopen_with() == url
    for shown in (str(location), repr(location), f"{location}", location.shown):
        assert "s3cr" not in shown and "ops:***@db.internal:5432/app" in shown


def test_paths_and_urls_without_a_password_are_shown_as_given() -> None:
    for where in ("/var/app/eventwf.db", ":memory:", "postgresql://ops@db/app"):
        assert without_password(where) == where == LogLocation(where).shown
    assert not LogLocation("/var/app/eventwf.db").is_url
    assert LogLocation("postgres://a:b@h/d").shown == "postgres://a:***@h/d"
