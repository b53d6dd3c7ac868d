"""Finding and fetching checkpoints: the registry, the cache, the bundled demo and the Hugging Face Hub.

``--ckpt`` resolves, in order (DESIGN.md): an existing path (run folder or weights file); a run under
the runs dir; a checkpoint already in the cache; a bundled checkpoint; a registry name or ``org/repo``
on the Hub, downloaded into the cache.

All Hub traffic goes through ``huggingface_hub``: its download, cache layout (``<cache>/hub``), revision
pinning and offline mode. A checkpoint in the cache is the Hub's snapshot folder for one commit, which
holds ``config.json`` + ``model.safetensors`` like any run folder. Every failure becomes one
:class:`~aggan_cli.errors.WeightsError` line that says what to do.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import CheckpointError, WeightsError

CONFIG_FILE = "config.json"      # the same names as checkpoint.py, which imports torch: kept light here
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
BUNDLED_DIR = Path(__file__).parent / "bundled"

# Hub repo ids: "org/name", letters, digits, "-", "_" and "." (huggingface_hub validates the rest).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Published:
    """A named checkpoint: bundled inside the package, or a Hub repo pinned to one commit.

    ``sha256`` is the digest of ``model.safetensors``; downloads that do not match it are refused.
    A bundled entry without its digest (or without its files) is not offered anywhere.
    """

    name: str
    description: str
    domains: tuple[str, str]
    image_size: int                # the training crop in pixels
    sha256: str | None             # of model.safetensors
    bundled: str | None = None     # a folder under aggan_cli/bundled/
    repo_id: str | None = None     # or a Hub repository ...
    revision: str | None = None    # ... pinned to this commit

    def __post_init__(self) -> None:
        # Programming errors in the table below, not user errors: fail loudly at import.
        if (self.bundled is None) == (self.repo_id is None):
            raise ValueError(f"registry entry {self.name}: give exactly one of bundled= or repo_id=")
        if self.repo_id is not None and not (self.sha256 and self.revision and _COMMIT.fullmatch(self.revision)):
            raise ValueError(f"registry entry {self.name}: a Hub entry needs its sha256 and a pinned 40-hex commit")

    @property
    def source(self) -> str:
        if self.bundled is not None:
            return "bundled"
        return f"{self.repo_id}@{self.revision[:7]}"


# List only checkpoints that exist. demo-smile is what `aggan train --demo` produces, shipped in the
# wheel under aggan_cli/bundled/demo-smile/; it becomes available once its two files are in place and
# its sha256 (`sha256sum aggan_cli/bundled/demo-smile/model.safetensors`) is filled in here.
REGISTRY: dict[str, Published] = {
    entry.name: entry
    for entry in (
        Published(
            name="demo-smile",
            description="Procedural faces, neutral → smiling (aggan train --demo); translates offline",
            domains=("neutral", "smile"),
            image_size=48,
            sha256="d4671dc3d06c1f54750e0c7e7fe18095df0355ea4b39d2cd82be365f23f23b05",
            bundled="demo-smile",
        ),
    )
}


# What translate and export-masks use without --ckpt: works offline, right after pip install.
DEFAULT_CHECKPOINT = "demo-smile"


def describe_default_checkpoint() -> str:
    """Which model runs without ``--ckpt``, and what it was trained for, in a few words."""
    entry = REGISTRY[DEFAULT_CHECKPOINT]
    a, b = entry.domains
    return (f"{entry.name}, bundled with aggan: a toy model trained on {entry.image_size}-px procedural faces "
            f"({a} → {b}) to try aggan out, not for real photos")


# ---------------------------------------------------------------------------------------------
# the cache and the environment


def default_runs_dir() -> Path:
    return Path(os.environ.get("AGGAN_RUNS_DIR") or "runs")


def default_cache_dir() -> Path:
    """``AGGAN_HOME`` if set, else the platform's user cache folder (``~/.cache/aggan`` on Linux)."""
    home = os.environ.get("AGGAN_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("aggan"))


def hub_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The ``huggingface_hub`` cache inside aggan's cache folder."""
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "hub"


def is_offline(offline: bool = False) -> bool:
    """``--offline``, or ``HF_HUB_OFFLINE`` set in the environment now (read at call time)."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The Hub to talk to: ``HF_ENDPOINT`` read at call time (huggingface_hub reads it once, at import),
    checked, so that a malformed one is one line that names it."""
    from urllib.parse import urlsplit

    raw = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    endpoint = raw.strip().rstrip("/")
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is out of range or not a number
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise WeightsError(f"HF_ENDPOINT={raw!r} is not a web address (http:// or https://, a host and an optional "
                           "port up to 65535); set it to the Hub's address, e.g. https://huggingface.co, or unset it")
    return endpoint


def _hub():
    """``huggingface_hub``, imported once the environment it reads at import time is known to be usable.

    It parses ``HF_ENDPOINT`` when its download module is first imported, and prints that failure on
    stdout, where aggan's results go: the endpoint is checked first, and anything the import prints is
    kept off stdout and folded into one line."""
    import contextlib
    import io

    hub_endpoint()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            import huggingface_hub
            import huggingface_hub.file_download  # noqa: F401 - the lazy import that reads the environment
    except Exception as exc:  # noqa: BLE001 - any import failure is the environment's; say so in one line
        raise WeightsError(f"huggingface_hub cannot be loaded ({_first_line(exc)}); check the HF_* environment "
                           "variables") from None
    return huggingface_hub


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` can name a Hub repository (``org/name``), by huggingface_hub's own rules."""
    if not _REPO_ID.fullmatch(spec):
        return False
    utils = _hub().utils
    try:
        utils.validate_repo_id(spec)
    except utils.HFValidationError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# bundled checkpoints


def bundled_path(entry: Published) -> Path | None:
    """The bundled run folder if its files are present and match the registry's digest, else None."""
    if entry.bundled is None or entry.sha256 is None:
        return None
    folder = BUNDLED_DIR / entry.bundled
    if not ((folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()):
        return None
    return folder if sha256_of(folder / WEIGHTS_FILE) == entry.sha256 else None


def _bundled_or_raise(entry: Published, revision: str | None = None) -> Path:
    if revision is not None:
        raise WeightsError(f"{entry.name} is bundled with aggan: it has no revisions to choose from; leave out "
                           f"--revision (or give a Hub ORG/REPO)")
    path = bundled_path(entry)
    if path is None:
        raise WeightsError(f"the bundled checkpoint {entry.name!r} is not part of this installation of aggan "
                           f"(its files are missing or damaged); reinstall aggan (pip install --force-reinstall aggan), "
                           f"or train your own with `aggan train --demo` and pass --ckpt RUN_NAME")
    return path


# ---------------------------------------------------------------------------------------------
# the Hub


@dataclass(frozen=True)
class HubTarget:
    """One checkpoint on the Hub: a repo at a revision, and the digest to check when the registry has one."""

    repo_id: str
    revision: str          # branch, tag or commit
    sha256: str | None
    label: str             # what the user typed: a registry name or ORG/REPO

    @property
    def pinned(self) -> bool:
        return bool(_COMMIT.fullmatch(self.revision))

    def display(self) -> str:
        at = "" if self.revision == "main" else f"@{self.revision}"
        return f"{self.label}{at}" if self.label == self.repo_id else f"{self.label} ({self.repo_id}{at})"


def hub_target(spec: str, revision: str | None = None) -> HubTarget | None:
    """What ``spec`` means on the Hub: a registry entry's pinned repo, an ``org/repo``, or None."""
    entry = REGISTRY.get(spec)
    if entry is not None and entry.repo_id is not None:
        rev = revision or entry.revision
        # The digest belongs to the pinned commit; another revision is the user's choice, unchecked.
        return HubTarget(entry.repo_id, rev, entry.sha256 if rev == entry.revision else None, spec)
    if entry is None and is_repo_id(spec):
        return HubTarget(spec, revision or "main", None, spec)
    return None


def find_in_cache(target: HubTarget, cache_dir: str | Path | None = None) -> Path | None:
    """The cached snapshot folder for ``target`` (both files present and, if known, the right digest), or None.

    Touches no network. A cached file with the wrong digest is removed, so the next download replaces it.
    """
    cache = hub_cache_dir(cache_dir)
    if not cache.is_dir():
        return None
    try_to_load_from_cache = _hub().try_to_load_from_cache
    found = [try_to_load_from_cache(target.repo_id, name, cache_dir=str(cache), revision=target.revision)
             for name in (WEIGHTS_FILE, CONFIG_FILE)]
    if not all(isinstance(f, str) for f in found):
        return None
    weights, config = (Path(f) for f in found)
    if weights.parent != config.parent:
        return None
    if target.sha256 is not None and sha256_of(weights) != target.sha256:
        _remove_cached_file(weights)
        return None
    return weights.parent


def fetch(target: HubTarget, cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Download ``target`` into the cache and return its snapshot folder.

    ``model.safetensors`` first (checked against the registry's digest), ``config.json`` last and from the
    same commit, then the model card if the repo has one: a snapshot with both files is a complete
    download. huggingface_hub writes each file to a temporary name and renames it when complete, so a
    download cut off half-way never leaves a partial file under its real name.
    """
    hf = _hub()
    cache = hub_cache_dir(cache_dir)
    _check_cache_folder(cache)
    endpoint = hub_endpoint()
    options = dict(cache_dir=str(cache), endpoint=endpoint, force_download=force,
                   library_name="aggan", library_version=__version__)
    with _hub_errors(target, cache, endpoint) as errors:
        errors.filename = WEIGHTS_FILE
        # One HEAD without retries first: a dead network or a missing repo fails now, not after
        # huggingface_hub's ~20 s of backoff retries.
        hf.get_hf_file_metadata(hf.hf_hub_url(target.repo_id, WEIGHTS_FILE, revision=target.revision,
                                              endpoint=endpoint))
        weights = Path(hf.hf_hub_download(target.repo_id, WEIGHTS_FILE, revision=target.revision, **options))
        snapshot, commit = weights.parent, weights.parent.name
        if target.sha256 is not None:
            actual = sha256_of(weights)
            if actual != target.sha256:
                _remove_cached_file(weights)
                raise WeightsError(f"{target.display()}: model.safetensors has sha256 {actual[:16]}…, not the "
                                   f"registered {target.sha256[:16]}…; the file was removed and nothing was "
                                   f"loaded. Run the command again; if it persists, the published file changed")
        errors.filename = CONFIG_FILE
        hf.hf_hub_download(target.repo_id, CONFIG_FILE, revision=commit, **options)
        errors.filename = CARD_FILE
        try:
            hf.hf_hub_download(target.repo_id, CARD_FILE, revision=commit, **options)
        except Exception as exc:  # the card is optional; any other failure is reported below
            if not _is_missing_entry(exc):
                raise
    return snapshot


def _check_cache_folder(cache: Path) -> None:
    """Refuse a cache that cannot be a folder (``AGGAN_HOME`` pointing at a file) before any download."""
    for folder in (cache, *cache.parents):
        if folder.exists():
            if not folder.is_dir():
                raise WeightsError(f"the cache folder {cache} cannot be created: {folder} is a file; point AGGAN_HOME "
                                   "(or --cache-dir) at a folder")
            return


def _remove_cached_file(pointer: Path) -> None:
    """Delete a snapshot file and the blob it links to (the cache's content-addressed copy)."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    if blob != pointer and blob.parent.name == "blobs":
        blob.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# huggingface_hub's exceptions -> one line each


class _hub_errors:
    """Context manager: turn whatever huggingface_hub or the network raises into one WeightsError line.

    ``filename`` names the file being fetched, for the message; the caller updates it as it goes.
    """

    def __init__(self, target: HubTarget, cache: Path, endpoint: str) -> None:
        self.target, self.cache, self.endpoint = target, cache, endpoint
        self.filename = WEIGHTS_FILE

    def __enter__(self) -> "_hub_errors":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, (WeightsError, KeyboardInterrupt)):
            return False
        # With force_download, huggingface_hub wraps the real error in a ValueError.
        cause = exc.__cause__ if isinstance(exc, ValueError) and exc.__cause__ is not None else exc
        message = _describe(cause, self.target, self.filename, self.cache, self.endpoint)
        if message is None:
            return False  # not a download failure: a bug, keep the traceback
        raise WeightsError(message) from None


def _describe(exc: BaseException, target: HubTarget, filename: str, cache: Path, endpoint: str) -> str | None:
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what, repo = target.display(), target.repo_id
    login = "log in with `hf auth login` (or set HF_TOKEN)"
    if isinstance(exc, GatedRepoError):
        return f"{what}: the repository is gated; accept its conditions at {endpoint}/{repo} and {login}"
    if isinstance(exc, RepositoryNotFoundError):
        if _status(exc) == 401:
            return (f"{what}: access denied (HTTP 401) by {endpoint}: the repository is private or gated, or does "
                    f"not exist; check the name, and {login} if it is private")
        return (f"{what} is neither a local path nor a repository on {endpoint} (HTTP {_status(exc) or 404}); "
                f"check the name (see `aggan download-weights --list`)")
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo} has no revision {target.revision!r} on {endpoint}; check the branch, tag or commit"
    if isinstance(exc, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and is_offline()):
        return _offline_message(target, cache)
    if isinstance(exc, LocalEntryNotFoundError):
        return _unreachable_message(target, endpoint, exc.__cause__ or exc)
    if _is_missing_entry(exc):
        return (f"{what} has no {filename}, so it is not an aggan checkpoint (a run folder uploaded to the Hub "
                f"holds config.json and model.safetensors)")
    if isinstance(exc, HfHubHTTPError):
        return f"{endpoint} answered HTTP {_status(exc)} for {filename} of {what}; try again later"
    if isinstance(exc, HFValidationError):
        return f"{target.label!r} is not a valid Hub repository id (ORG/REPO): {_first_line(exc)}"
    if _is_transport_error(exc):
        if type(exc).__name__ in ("ConnectError", "ConnectTimeout"):
            return _unreachable_message(target, endpoint, exc)
        return (f"the connection to {endpoint} broke off while downloading {filename} of {what} ({_first_line(exc)}); "
                f"no partial file was kept: run the command again")
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return (f"no space left on the device while downloading {what} into {cache}: free some space, or "
                    f"point AGGAN_HOME (or --cache-dir) at a larger disk")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            return (f"cannot write to the cache {cache} ({exc.strerror}): set AGGAN_HOME (or --cache-dir) to a "
                    f"writable folder")
        return f"downloading {filename} of {what} into {cache} failed ({_first_line(exc)})"
    return None


def _offline_message(target: HubTarget, cache: Path) -> str:
    entry = REGISTRY.get(target.label)
    default = entry.revision if entry is not None else "main"
    rev = "" if target.revision == default else f" --revision {target.revision}"
    return (f"{target.display()} is not in the cache ({cache}) and offline mode is on (--offline or HF_HUB_OFFLINE=1); "
            f"download it once while online with `aggan download-weights {target.label}{rev}`, "
            f"or pass a local run folder with --ckpt")


def _unreachable_message(target: HubTarget, endpoint: str, exc: BaseException) -> str:
    return (f"cannot reach the Hugging Face Hub at {endpoint} to download {target.display()} "
            f"({_first_line(exc)}), and it is not in the cache: check your connection, proxy or HF_ENDPOINT, "
            f"or use a local run folder with --ckpt")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_missing_entry(exc: BaseException) -> bool:
    """A file the repo does not have (huggingface_hub's EntryNotFoundError from the server, not the cache)."""
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError)


def _is_transport_error(exc: BaseException) -> bool:
    """Network-level failures of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    import importlib

    for module in ("httpx2", "httpx"):
        try:
            if isinstance(exc, importlib.import_module(module).TransportError):
                return True
        except (ImportError, AttributeError):
            continue
    return False


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# --ckpt


def resolve_checkpoint(spec: str, *, runs_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                       offline: bool = False, revision: str | None = None) -> Path:
    """Turn a ``--ckpt`` value into a local run folder (or weights file) path.

    Order (DESIGN.md): an existing path; a run under the runs dir; a checkpoint already in the cache
    (no network at all); a bundled checkpoint; a registry name or ``org/repo`` downloaded from the Hub.
    Offline (``offline=True`` or ``HF_HUB_OFFLINE=1``), the last step is an error that says how to fix it.
    """
    if not spec.strip():
        raise CheckpointError("the checkpoint name is empty; give --ckpt a run name, a run folder or "
                              "model.safetensors, a known name (see `aggan download-weights --list`) or a Hub ORG/REPO")
    path = Path(spec).expanduser()
    if path.exists():
        return path
    runs = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if "/" not in spec and "\\" not in spec and (runs / spec).is_dir():
        return runs / spec
    target = hub_target(spec, revision)
    if target is not None:
        cached = find_in_cache(target, cache_dir)
        if cached is not None:
            return cached
    entry = REGISTRY.get(spec)
    if entry is not None and entry.bundled is not None:
        return _bundled_or_raise(entry, revision)
    if target is None:
        raise CheckpointError(f"checkpoint {spec!r} not found: it is not a path, a run in {runs}/, a known name "
                              f"(see `aggan download-weights --list`) or a Hub ORG/REPO")
    if is_offline(offline):
        raise WeightsError(_offline_message(target, hub_cache_dir(cache_dir)))
    return fetch(target, cache_dir)


# ---------------------------------------------------------------------------------------------
# download-weights


@dataclass(frozen=True)
class Download:
    """What ``aggan download-weights`` did: where the checkpoint is, and what it holds."""

    path: Path              # the run folder (cache snapshot or bundled folder)
    source: str             # "bundled", or ORG/REPO@COMMIT (first 7 digits)
    downloaded: bool        # False when it was already there
    verified: bool          # True when the sha256 was checked against the registry
    step: int
    domains: tuple[str, str]


def download(spec: str, *, revision: str | None = None, force: bool = False,
             cache_dir: str | Path | None = None, offline: bool = False) -> Download:
    """Make ``spec`` (a registry name or ``org/repo``) available locally and check it loads.

    A checkpoint already in the cache is used as is (no network); ``force`` downloads it again.
    The files are then loaded once on the CPU, so a broken upload is reported here and not at translate time.
    """
    entry = REGISTRY.get(spec)
    if entry is not None and entry.bundled is not None:
        path, source, downloaded, verified = _bundled_or_raise(entry, revision), "bundled", False, True
    else:
        target = hub_target(spec, revision)
        if target is None:
            raise WeightsError(f"{spec!r} is neither a known checkpoint name nor a Hub ORG/REPO; "
                               f"see `aggan download-weights --list`")
        cached = None if force else find_in_cache(target, cache_dir)
        if cached is not None:
            path, downloaded = cached, False
        elif is_offline(offline):
            if force:
                raise WeightsError(f"--force downloads {target.display()} again, which needs the network, but offline "
                                   f"mode is on (--offline or HF_HUB_OFFLINE=1)")
            raise WeightsError(_offline_message(target, hub_cache_dir(cache_dir)))
        else:
            path, downloaded = fetch(target, cache_dir, force=force), True
        source, verified = f"{target.repo_id}@{path.name[:7]}", target.sha256 is not None
    step, domains = _check_loadable(path, spec)
    return Download(path, source, downloaded, verified, step, domains)


def _check_loadable(path: Path, spec: str) -> tuple[int, tuple[str, str]]:
    from .checkpoint import load_generators

    try:
        _, _, ckpt = load_generators(path, "cpu")
    except CheckpointError as exc:
        raise WeightsError(f"{spec} was fetched to {path} but is not a loadable aggan checkpoint: {exc}") from None
    return ckpt.step, ckpt.domains


# ---------------------------------------------------------------------------------------------
# download-weights --list


@dataclass(frozen=True)
class Listed:
    """One row of ``aggan download-weights --list``."""

    name: str
    source: str
    domains: tuple[str, str] | None
    image_size: int | None
    size_bytes: int | None     # of model.safetensors, when it is on this machine
    status: str                # "bundled", "cached", "not cached", "not in this build"
    description: str = ""


def list_checkpoints(cache_dir: str | Path | None = None) -> list[Listed]:
    """The registry's checkpoints with their local state, then any other checkpoint in the cache. Offline."""
    rows: list[Listed] = []
    for entry in REGISTRY.values():
        if entry.bundled is not None:
            local = bundled_path(entry)
            status = "bundled" if local is not None else "not in this build"
        else:
            local = find_in_cache(HubTarget(entry.repo_id, entry.revision, entry.sha256, entry.name), cache_dir)
            status = "cached" if local is not None else "not cached"
        size = (local / WEIGHTS_FILE).stat().st_size if local is not None else None
        rows.append(Listed(entry.name, entry.source, entry.domains, entry.image_size, size, status, entry.description))
    registered = {e.repo_id for e in REGISTRY.values() if e.repo_id}
    for repo_id, label, snapshot in _cached_snapshots(cache_dir):
        if repo_id in registered:
            continue
        domains, image_size = _describe_config(snapshot / CONFIG_FILE)
        rows.append(Listed(repo_id, f"{repo_id}@{label}", domains, image_size,
                           (snapshot / WEIGHTS_FILE).stat().st_size, "cached"))
    return rows


def _cached_snapshots(cache_dir: str | Path | None) -> Iterator[tuple[str, str, Path]]:
    """(repo id, ref or short commit, snapshot folder) for each complete checkpoint in the Hub cache."""
    cache = hub_cache_dir(cache_dir)
    if not cache.is_dir():
        return
    for repo in sorted(_hub().scan_cache_dir(cache).repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            names = {f.file_name for f in revision.files}
            if {CONFIG_FILE, WEIGHTS_FILE} <= names:
                label = ",".join(sorted(revision.refs)) or revision.commit_hash[:7]
                yield repo.repo_id, label, Path(revision.snapshot_path)


def _describe_config(path: Path) -> tuple[tuple[str, str] | None, int | None]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        domains = config.get("domains") or {}
        return (str(domains.get("a", "A")), str(domains.get("b", "B"))), (config.get("model") or {}).get("image_size")
    except (OSError, ValueError, AttributeError, RecursionError):  # RecursionError: 100,000 nested lists
        return None, None
