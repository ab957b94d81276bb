"""An audit record's JSON line: every field, scalars as they are, the start as UTC text."""

from __future__ import annotations

import dataclasses
import json

from tunnel.audit import AuditRecord


def test_the_json_line_holds_every_field() -> None:
    record = AuditRecord(session=7, client="127.0.0.1:5000", started=0.0, dst="ftp.example",
                         port=21, reply=0, local_uid=1000, duration_ms=1.5)
    line = record.to_json()
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == {f.name for f in dataclasses.fields(AuditRecord)}
    assert parsed["started"] == "1970-01-01T00:00:00Z"
    assert (parsed["session"], parsed["dst"], parsed["port"], parsed["reply"]) == (
        7, "ftp.example", 21, 0)
    assert parsed["local_uid"] == 1000 and parsed["duration_ms"] == 1.5
    assert record.started == 0.0  # the record itself is left as it was


def test_every_field_is_a_scalar() -> None:
    """to_json copies the record shallowly: a list or dict field would be shared."""
    record = AuditRecord(session=1, client="c")
    for field in dataclasses.fields(record):
        assert isinstance(getattr(record, field.name), (str, int, float, type(None))), field.name
