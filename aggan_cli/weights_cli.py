"""Pending: `aggan download-weights` is delivered by the weights issue."""

from .errors import AgganError


def run_download_command(name, **options):
    raise AgganError("`aggan download-weights` is not built yet in this version; nothing was done")
