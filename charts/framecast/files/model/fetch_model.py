"""Fetches a model directory for fetch-model.sh with Python's standard library only (the
downloader image needs nothing but python3):

  huggingface  HF_REPO at HF_REVISION through the Hub's HTTP API (HF_ENDPOINT, default
               https://huggingface.co; HF_TOKEN for gated or private repos); HF_INCLUDE: comma
               separated glob patterns of the files to take (default: all)
  url          FRAMECAST_MODEL_URL: a tar, tar.gz, tar.bz2 or tar.xz archive over HTTP(S), e.g.
               a presigned S3 or signed GCS URL; FRAMECAST_MODEL_SHA256 checks it when set

    python3 fetch_model.py <empty target directory>

A model whose files sit in one top-level directory of the archive is moved up, so archives made
with `tar -C models -czf wan.tar.gz wan-tiny` and `tar -C models/wan-tiny -czf wan.tar.gz .`
both work.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
ATTEMPTS = 4


def fail(message: str) -> None:
    print(f"fetch-model: {message}", file=sys.stderr)
    sys.exit(1)


def open_url(url: str, headers: dict[str, str]):
    """GET with retries on network errors and 5xx/429; other HTTP errors fail at once."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
        except urllib.error.HTTPError as e:
            if e.code < 500 and e.code != 429:
                hint = " (a gated or private repository needs a token: replica.model.source.huggingface.token)" if e.code in (401, 403) else ""
                fail(f"GET {redact(url)}: HTTP {e.code}{hint}")
            error = f"HTTP {e.code}"
        except OSError as e:
            error = str(e)
        if attempt == ATTEMPTS:
            fail(f"GET {redact(url)}: {error} (after {ATTEMPTS} attempts)")
        time.sleep(2**attempt)


def redact(url: str) -> str:
    """The URL without its query (presigned URLs carry credentials there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="<redacted>" if parts.query else ""))


def download(url: str, dest: Path, headers: dict[str, str]) -> str:
    """Streams `url` to `dest`; returns the content's sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open_url(url, headers) as response, open(dest, "wb") as out:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def safe_relative(name: str) -> Path:
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or not name:
        fail(f"refusing the file name {name!r}")
    return path


def fetch_huggingface(target: Path) -> None:
    repo = os.environ["HF_REPO"]
    revision = os.environ.get("HF_REVISION") or "main"
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    include = [p for p in (os.environ.get("HF_INCLUDE") or "").split(",") if p]
    headers = {"User-Agent": "framecast-fetch-model"}
    if os.environ.get("HF_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['HF_TOKEN']}"
    quoted = urllib.parse.quote(revision, safe="")
    with open_url(f"{endpoint}/api/models/{repo}/revision/{quoted}", headers) as response:
        info = json.load(response)
    # Files are fetched at the commit the revision named when listed, so a branch that moves
    # mid-download cannot mix two commits.
    commit = info.get("sha") or revision
    files = [s["rfilename"] for s in info.get("siblings", [])]
    if include:
        files = [f for f in files if any(fnmatch.fnmatch(f, p) for p in include)]
    if not files:
        fail(f"{repo}@{revision} lists no files{' matching ' + ','.join(include) if include else ''}")
    for name in files:
        url = f"{endpoint}/{repo}/resolve/{commit}/{urllib.parse.quote(name)}"
        download(url, target / safe_relative(name), headers)
        print(f"fetch-model: {name}", flush=True)
    print(f"fetch-model: {len(files)} files of {repo} at {commit}")


def fetch_url(target: Path) -> None:
    url = os.environ["FRAMECAST_MODEL_URL"]
    want = (os.environ.get("FRAMECAST_MODEL_SHA256") or "").lower()
    # The archive goes next to the target (the cache volume), not to the small /tmp.
    archive = target.parent / f".{target.name}.archive"
    try:
        got = download(url, archive, {"User-Agent": "framecast-fetch-model"})
        if want and got != want:
            fail(f"{redact(url)} has sha256 {got}, expected {want}")
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                name = member.name.removeprefix("./")
                if name and name != ".":
                    safe_relative(name)
                if not (member.isfile() or member.isdir()):
                    fail(f"refusing archive member {member.name!r}: only files and directories (tar -h follows links)")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")
            else:
                tar.extractall(target, members=members)
    except tarfile.TarError as e:
        fail(f"{redact(url)} is not a readable tar archive: {e}")
    finally:
        archive.unlink(missing_ok=True)
    print(f"fetch-model: unpacked {redact(url)}")


def hoist_single_directory(target: Path) -> None:
    entries = list(target.iterdir())
    if (target / "model_index.json").exists() or len(entries) != 1 or not entries[0].is_dir():
        return
    inner = entries[0]
    for child in inner.iterdir():
        shutil.move(str(child), target / child.name)
    inner.rmdir()


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: fetch_model.py <target directory>")
    target = Path(sys.argv[1])
    kind = os.environ.get("FRAMECAST_MODEL_KIND")
    if kind == "huggingface":
        fetch_huggingface(target)
    elif kind == "url":
        fetch_url(target)
    else:
        fail(f"fetch_model.py fetches huggingface and url sources, not {kind!r}")
    hoist_single_directory(target)


if __name__ == "__main__":
    main()
