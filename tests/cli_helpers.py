"""Helpers shared by the CLI-level tests: run the CLI in-process and check one-line errors."""

from __future__ import annotations

from safereuse.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``safereuse ARGV`` in-process; return (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A user error: non-zero exit, exactly one line ``error: ... (fix: ...)``, no traceback."""
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "fix:" in lines[0], err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, err)
