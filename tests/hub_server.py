"""A local stand-in for the Hugging Face Hub's file API, for tests that must never touch the internet.

It speaks what ``huggingface_hub.hf_hub_download`` uses: ``HEAD`` and ``GET`` on
``/{org}/{repo}/resolve/{revision}/{filename}``, answering with the headers the Hub sends
(``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS-style files,
``Content-Length``, ranges for resumed downloads) and the Hub's errors (``X-Error-Code``:
``RepoNotFound``, ``GatedRepo``, ``RevisionNotFound``, ``EntryNotFound``). Every request is recorded,
so a test can assert that a cache hit sent none.

    with HubServer() as hub:
        commit = hub.add_commit("org/model", {"config.json": b"{}", "model.safetensors": data})
        ...  # point HF_ENDPOINT at hub.url
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".png")  # served like Git LFS files: ETag = sha256 of the content


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {filename: content}
    refs: dict[str, str] = field(default_factory=dict)                  # branch or tag -> commit
    access: str = "public"                                              # "public", "private" or "gated"


def run_files(run_dir: str | Path) -> dict[str, bytes]:
    """The files of a run folder (not its subfolders), as a Hub repo would hold them."""
    return {p.name: p.read_bytes() for p in sorted(Path(run_dir).iterdir()) if p.is_file()}


def etag_of(filename: str, content: bytes) -> str:
    """What the Hub uses as ETag: sha256 for LFS files, the git blob sha1 for the others."""
    if filename.endswith(LFS_SUFFIXES):
        return hashlib.sha256(content).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) holding repos in memory."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.cuts: dict[str, float] = {}  # filename -> fraction of the file after which GETs break off
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # --- content -----------------------------------------------------------------------------

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, ref: str | None = "main") -> str:
        """Add a commit holding ``files`` and point ``ref`` (a branch or tag) at it; returns its hash."""
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        commit = digest.hexdigest()
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            repo.commits[commit] = dict(files)
            if ref is not None:
                repo.refs[ref] = commit
        return commit

    def set_access(self, repo_id: str, access: str) -> None:
        self.repos[repo_id].access = access

    def cut(self, filename: str, fraction: float = 0.5) -> None:
        """From now on, every GET of ``filename`` announces the full length but stops at ``fraction`` of it."""
        self.cuts[filename] = fraction

    def heal(self) -> None:
        self.cuts.clear()

    # --- what clients asked ------------------------------------------------------------------

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def seen(self, method: str | None = None, filename: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (filename is None or r.path.endswith("/" + filename))]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


_RESOLVE = re.compile(r"^/(?P<org>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        # The Hub's answers --------------------------------------------------------------------

        def _serve(self, *, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.record(Request(self.command, path, self.headers.get("Range")))
            match = _RESOLVE.match(path)
            if match is None:
                return self._error(404, None, "Not Found")
            repo_id = f"{unquote(match['org'])}/{unquote(match['name'])}"
            revision, filename = unquote(match["rev"]), unquote(match["file"])
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if repo.access == "private":
                return self._error(401, "RepoNotFound", "Repository not found")
            if repo.access == "gated":
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                                                     "access to it and be authenticated to access it.")
            commit = repo.refs.get(revision, revision)
            if commit not in repo.commits:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            content = repo.commits[commit].get(filename)
            if content is None:
                return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                                   {"X-Repo-Commit": commit})
            self._send_file(filename, content, commit, body=body)

        def _send_file(self, filename: str, content: bytes, commit: str, *, body: bool) -> None:
            etag = etag_of(filename, content)
            start = _range_start(self.headers.get("Range")) if body else 0
            headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream", "Content-Length": str(len(content) - start)}
            if filename.endswith(LFS_SUFFIXES):
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))})
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            self._start(206 if start else 200, headers)
            if not body:
                return
            end = len(content)
            if filename in hub.cuts:  # the connection dies at a fixed byte: resumed requests get no further
                end = max(start, int(len(content) * hub.cuts[filename]))
            self.wfile.write(content[start:end])
            self.wfile.flush()

        def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
            data = f'{{"error": "{message}"}}'.encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}
            if code is not None:
                headers.update({"X-Error-Code": code, "X-Error-Message": message})
            self._start(status, headers)
            if self.command != "HEAD":
                self.wfile.write(data)

        def _start(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")  # one request per connection: nothing lingers after a test
            self.end_headers()
            self.close_connection = True

    return Handler


def _range_start(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else 0


def make_run(run_dir: str | Path, *, step: int = 1, seed: int = 0, domains: tuple[str, str] = ("neutral", "smile")) -> Path:
    """A tiny real checkpoint (ngf 4, one block, 32 px) written by aggan's own save_run."""
    import torch

    from aggan_cli.checkpoint import save_run
    from aggan_cli.config import ModelConfig
    from aggan_cli.networks import AGGAN

    config = ModelConfig(ngf=4, n_blocks=1, ndf=4, image_size=32)
    torch.manual_seed(seed)
    model = AGGAN(config, with_discriminators=False)
    return save_run(run_dir, model_config=config, g_ab=model.g_ab, g_ba=model.g_ba, step=step, domains=domains)
