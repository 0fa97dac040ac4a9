"""Helpers for tests of `faceflow COMMAND` errors."""
from __future__ import annotations

import pytest


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """What the command printed to stderr, asserting it is the one line a refusal must be."""
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err
