"""Pending: `aggan translate` / `export-masks` are delivered by the translate issue."""

from .errors import AgganError


def run_translate_command(inputs, **options):
    raise AgganError("`aggan translate` and `aggan export-masks` are not built yet in this version; nothing was done")
