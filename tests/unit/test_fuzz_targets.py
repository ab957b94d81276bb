"""The fuzz targets (fuzz/targets.py) under hypothesis, as part of `make test`; `make fuzz`
runs the same targets under atheris for a million inputs and more."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets

PROGRAMS = st.binary(max_size=400)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=PROGRAMS)
def test_target_holds_its_invariants(name: str, data: bytes) -> None:
    targets.TARGETS[name](data)


@pytest.mark.parametrize(("name", "data"), [(n, d) for n, ds in targets.SEEDS.items()
                                              for d in ds])
def test_seed(name: str, data: bytes) -> None:
    targets.TARGETS[name](data)


def _heard(target: str) -> bytes:
    """What a session target's client heard when driven by the target's first seed."""
    layer_said: list[bytes] = []
    original = targets._complete_replies
    targets._complete_replies = layer_said.append  # type: ignore[assignment]
    try:
        targets.TARGETS[target](targets.SEEDS[target][0])
    finally:
        targets._complete_replies = original
    return layer_said[0]


def test_session_seed_really_logs_in_and_hears_only_replies() -> None:
    """The control for the session target: its driver does reach RELAY with a password."""
    heard = _heard("ftp-session")
    assert b"230 in" in heard and b"227 " in heard


def test_config_text_builds_documents_that_load() -> None:
    """The control for the config target: its generator reaches a valid config too."""
    text = targets.config_text(bytes([1, 1, 2, 2, 0, 17, 1, 2, 0, 20]))
    assert "[[rule]]" in text or "[[profile]]" in text or "[proxy]" in text, text


def test_sftp_session_seed_really_logs_in_and_opens_a_data_connection() -> None:
    """The control for the ftp-sftp target: its driver logs in and reaches a transfer."""
    heard = _heard("sftp-session")
    assert b"230 Login" in heard and b"227 " in heard
    assert b"425 " in heard  # a STOR got as far as its data connection
