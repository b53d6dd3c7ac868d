"""What a command's answer must look like when it refuses: exit 1, one ``error:`` line, no traceback."""

from __future__ import annotations


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit 1, exactly one ``error:`` line holding every fragment, and no traceback; returns the line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
