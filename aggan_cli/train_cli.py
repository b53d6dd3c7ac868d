"""Pending: `aggan train` is delivered by the training issue."""

from .errors import AgganError


def run_train_command(values, given):
    raise AgganError("`aggan train` is not built yet in this version (it comes with the training work); nothing was done")
