"""``aggan download-weights``: fetch a published checkpoint into the cache, or list the known ones.

The work is in :mod:`aggan_cli.weights`; this module renders it. The result (the local path, or the
table) goes to stdout; notes go to stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import weights


def run_download_command(name: str | None, *, list_: bool, revision: str | None, force: bool,
                         cache_dir: Path | None, offline: bool) -> None:
    if list_ and name:
        raise typer.BadParameter("give a checkpoint NAME or --list, not both", param_hint="NAME")
    if list_:
        _print_table(weights.list_checkpoints(cache_dir), cache_dir)
        return
    if not name:
        raise typer.BadParameter("give a checkpoint NAME or ORG/REPO to download (or --list to see the known ones)",
                                 param_hint="NAME")
    result = weights.download(name, revision=revision, force=force, cache_dir=cache_dir, offline=offline)
    what = "downloaded" if result.downloaded else ("bundled with aggan" if result.source == "bundled" else "already cached")
    checks = "sha256 verified, " if result.verified else ""
    a, b = result.domains
    _stderr().print(f"{name}: {what} ({result.source}); {checks}loads: {a} ↔ {b}, step {result.step:,}",
                    markup=False, soft_wrap=True)
    typer.echo(str(result.path))


def _print_table(rows: list[weights.Listed], cache_dir: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="aggan checkpoints", caption=f"cache: {weights.hub_cache_dir(cache_dir)}",
                  title_justify="left", caption_justify="left")
    for column in ("name", "source", "domains", "size", "status"):
        table.add_column(column, no_wrap=column != "domains")
    style = {"bundled": "green", "cached": "green", "not cached": "yellow", "not in this build": "dim"}
    for row in rows:
        status = Text(row.status, style=style.get(row.status, ""))
        if row.size_bytes is not None:
            status.append(f" ({row.size_bytes / 1e6:.1f} MB)")
        table.add_row(  # Text(): names and domains are shown as they are, never read as rich markup
            Text(row.name),
            Text(row.source),
            Text(f"{row.domains[0]} ↔ {row.domains[1]}" if row.domains else "?"),
            f"{row.image_size} px" if row.image_size else "?",
            status,
        )
    Console(highlight=False).print(table)


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False)
