"""The one door for paths that may be URLs: a local path or an ``s3://`` (any fsspec) URL -> what listing, reading,
whole-object writing and removing need, so the rest of the code never splits a URL with ``Path``.

    is_url("s3://bucket/videos/")                 # True; local paths (and file://) are not URLs here
    filesystem("s3://bucket/videos/")             # (fsspec filesystem, "bucket/videos/")
    with failures("s3://bucket/x.parquet"): ...   # S3 errors -> one-line user errors naming the URL
    with local_copy("s3://bucket/a.mp4", 60) as path: ...   # a temporary local file (decoders need one)

Object storage goes through fsspec (s3fs for ``s3://``: ``pip install 'coca-video[s3]'``). Credentials and the
endpoint come from where boto reads them (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance
role; ``AWS_ENDPOINT_URL`` for MinIO, moto and other S3 APIs) or from fsspec's own configuration (``FSSPEC_S3_*``
variables, ``~/.config/fsspec/s3.json``). An object appears at its key only when its upload completes, so a
whole-object write (:func:`put_file`) is atomic as a rename is locally. This module imports nothing of the package
but :mod:`.errors`, so it loads in the decode helper process (see ``video.isolate``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import InputError, MissingExtraError, OutputError, UserError

PathLike = str | os.PathLike
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
DOWNLOAD_SECONDS_PER_MB = 1.0  # a download's time limit: the decode limit plus this per MB (at least 1 MB/s)
DISK_MARGIN_BYTES = 64 << 20  # a download leaves at least this much free in the temporary folder


def is_url(path: PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a local path, however written, is not a URL)."""
    return isinstance(path, str) and bool(_URL.match(path)) and not path.startswith("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``url``; without the filesystem's package a one-line error naming
    the extra."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url, use_listings_cache=False)  # other processes (Ray actors) write parts meanwhile
    except ImportError as err:
        raise MissingExtraError(f"{url}: object storage needs fsspec and s3fs, which are not installed ({err}); "
                                "pip install 'coca-video[s3]'") from None


class StorageError(UserError, OSError):
    """Object storage refused or failed a request (missing bucket or object, bad credentials, no endpoint); the
    message names the URL. ``reason`` is the message, for error rows."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = message


def describe_failure(url: str, err: BaseException) -> str:
    """One line for a failed request on ``url``: what S3 said (missing bucket, missing object, credentials)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, PermissionError):
        return f"{url}: access denied ({text}); check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)"
    if isinstance(err, FileNotFoundError):
        if "bucket" in text.lower():
            return f"{url}: bucket not found ({text})"
        return f"{url}: object not found" + ("" if text in url else f" ({text})")
    name = type(err).__name__
    if "Credentials" in name:  # botocore's NoCredentialsError, PartialCredentialsError
        return f"{url}: no usable credentials ({text}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile"
    if "Endpoint" in name or "Connect" in name:
        return f"{url}: cannot reach the storage endpoint ({text}); check AWS_ENDPOINT_URL"
    return f"{url}: request failed ({name}: {text})"


@contextlib.contextmanager
def failures(url: str, error: type[UserError] = StorageError) -> Iterator[None]:
    """Turn any failure of object storage inside the block into ``error`` (one line naming ``url``); user errors
    raised inside pass through."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 -- s3fs, botocore and aiohttp raise many kinds; each becomes one line
        raise error(describe_failure(url, err)) from None


def child(folder: PathLike, name: str) -> PathLike:
    """``folder/name``: a URL joined with ``/``, a local path with ``Path``."""
    return f"{str(folder).rstrip('/')}/{name}" if is_url(folder) else Path(folder) / name


def sibling(path: PathLike, name: str) -> PathLike:
    """The path named ``name`` in the folder that holds ``path``."""
    return f"{str(path).rsplit('/', 1)[0]}/{name}" if is_url(path) else Path(path).with_name(name)


def name_of(path: PathLike) -> str:
    """The last component of ``path``."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else Path(path).name


def exists(path: PathLike) -> bool:
    """Whether a file (object) or folder (prefix) is at ``path``."""
    if not is_url(path):
        return os.path.exists(path)
    fs, inner = filesystem(str(path))
    with failures(str(path)):
        return fs.exists(inner)


def is_dir(path: PathLike) -> bool:
    """Whether ``path`` is a folder (for a URL: a prefix holding at least one object)."""
    if not is_url(path):
        return Path(path).is_dir()
    fs, inner = filesystem(str(path))
    with failures(str(path)):
        return fs.isdir(inner)


def files_in(folder: PathLike) -> list[PathLike]:
    """The files directly in ``folder`` (none when it does not exist), as paths or URLs."""
    if not is_url(folder):
        folder = Path(folder)
        return [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    fs, inner = filesystem(str(folder))
    with failures(str(folder)):
        try:
            entries = fs.ls(inner, detail=True, refresh=True)
        except FileNotFoundError:
            if not fs.exists(inner.split("/", 1)[0]):
                raise
            return []
    return [child(folder, name_of(e["name"])) for e in entries if e["type"] == "file"]


def stat(path: PathLike) -> tuple[int, float]:
    """(size in bytes, modification time in seconds since the epoch) of a file or object; FileNotFoundError when
    there is none (other failures of object storage: :class:`StorageError`)."""
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime
    fs, inner = filesystem(str(path))
    try:
        info = fs.info(inner)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001
        raise StorageError(describe_failure(str(path), err)) from None
    if info.get("type") != "file":
        raise FileNotFoundError(f"{path}: not an object")
    modified = info.get("LastModified") or info.get("mtime") or 0.0
    return int(info["size"]), modified.timestamp() if isinstance(modified, datetime) else float(modified)


def find_files(url: str, extensions: Sequence[str]) -> list[str]:
    """Objects under the prefix ``url`` (recursively, sorted) whose names end in one of ``extensions`` (any case);
    names in hidden "folders" or starting with "." are skipped, as :func:`~coca_video.data.video.find_videos` does
    locally. A missing bucket or refused credentials: :class:`~.errors.InputError` in one line."""
    fs, inner = filesystem(url)
    wanted = tuple(e.lower() for e in extensions)
    scheme = url.split("://", 1)[0]
    with failures(url, InputError):
        names = fs.find(inner.rstrip("/"), withdirs=False)
        if not names and not fs.exists(inner.split("/", 1)[0]):
            raise FileNotFoundError("The specified bucket does not exist")
    root = inner.rstrip("/") + "/"
    kept = [n for n in names if n.lower().endswith(wanted)
            and not any(part.startswith(".") for part in n[len(root):].split("/"))]
    return sorted(f"{scheme}://{n}" for n in kept)


def read_bytes(path: PathLike, error: type[UserError] = StorageError) -> bytes:
    """The content of a file or object (a missing object raises FileNotFoundError)."""
    if not is_url(path):
        return Path(path).read_bytes()
    fs, inner = filesystem(str(path))
    try:
        return fs.cat_file(inner)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001
        raise error(describe_failure(str(path), err)) from None


def put_file(local: Path, url: str) -> None:
    """Upload the finished local file ``local`` as the whole object ``url`` (it appears complete or not at all);
    a refused upload is an :class:`~.errors.OutputError` naming ``url``."""
    fs, inner = filesystem(url)
    with failures(url, OutputError):
        fs.put_file(str(local), inner)


def put_new(url: str, data: bytes) -> bool:
    """Create the object ``url`` holding ``data`` only if none exists (S3's conditional write): False when one
    does."""
    fs, inner = filesystem(url)
    with failures(url, OutputError):
        try:
            fs.pipe_file(inner, data, mode="create")
        except FileExistsError:
            return False
    return True


def remove(path: PathLike) -> None:
    """Remove a file or object if present."""
    if not is_url(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, inner = filesystem(str(path))
    with failures(str(path), OutputError):
        try:
            fs.rm_file(inner)
        except FileNotFoundError:
            pass


def check_writable(url: str, what: str) -> None:
    """Before any work: the bucket of ``url`` exists and takes a new object (tried by writing and removing a small
    one beside ``url``), else a one-line :class:`~.errors.OutputError` (``what``: the option that named it)."""
    probe = sibling(url, f".coca-video-write-test-{os.getpid()}")
    fs, inner = filesystem(probe)
    with failures(f"{what}={url}", OutputError):
        fs.pipe_file(inner, b"")
        fs.rm_file(inner)


def parquet_source(path: PathLike) -> tuple[str, Any]:
    """(where, filesystem) for pyarrow's ``read_table``/``read_schema``/``ParquetFile``: a local path and None, or
    the path inside an fsspec filesystem and that filesystem."""
    if not is_url(path):
        return str(path), None
    fs, inner = filesystem(str(path))
    return inner, fs


def storage_environment() -> dict[str, str]:
    """The variables that say where object storage is and who we are there (``AWS_*``, ``FSSPEC_*``)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "FSSPEC_"))}


def _download(url: str, local: str, environment: dict[str, str]) -> None:
    """Copy the object ``url`` to the local file ``local`` (run in the decode helper, under its time limit), with
    the caller's ``environment``: the helper lives on across calls and kept the variables of its start."""
    _adopt(environment, url.split("://", 1)[0])
    fs, inner = filesystem(url)
    fs.get_file(inner, local)


def _adopt(environment: dict[str, str], protocol: str) -> None:
    """Make this process's storage variables ``environment``; when they change, filesystems made under the old ones
    (cached by fsspec, holding their endpoint and credentials) are dropped."""
    current = storage_environment()
    if current == environment:
        return
    for name in current.keys() - environment.keys():
        del os.environ[name]
    os.environ.update(environment)
    import fsspec
    import fsspec.config

    fsspec.config.conf.clear()
    fsspec.config.set_conf_files(fsspec.config.conf_dir, fsspec.config.conf)
    fsspec.config.set_conf_env(fsspec.config.conf)
    fsspec.get_filesystem_class(protocol).clear_instance_cache()


@contextlib.contextmanager
def local_copy(url: str, timeout: float | None) -> Iterator[Path]:
    """A temporary local copy of the object ``url`` for the block, removed after it. The download runs in the
    decode helper process under ``timeout`` plus :data:`DOWNLOAD_SECONDS_PER_MB` per MB (no limit when ``timeout``
    is None), and only when the temporary folder has room for it; every failure is a :class:`StorageError`
    naming ``url`` (a missing object: "object not found")."""
    from .video.isolate import DecodeTimeout, call_with_timeout

    size, _ = _object_size(url)
    folder = Path(tempfile.mkdtemp(prefix="coca-video-"))
    try:
        free = shutil.disk_usage(folder).free
        if size + DISK_MARGIN_BYTES > free:
            raise StorageError(f"{url}: object of {size / 1e6:.0f} MB does not fit in the temporary folder "
                               f"{folder.parent} ({free / 1e6:.0f} MB free); set TMPDIR to a larger disk")
        local = folder / (name_of(url) or "object")
        try:
            if timeout is None:
                _download(url, str(local), storage_environment())
            else:
                call_with_timeout(_download, timeout + DOWNLOAD_SECONDS_PER_MB * size / 1e6, url, str(local),
                                  storage_environment())
        except DecodeTimeout as err:
            raise StorageError(f"{url}: download timed out after {err.waited:.0f} s ({size / 1e6:.1f} MB)") from None
        except Exception as err:  # noqa: BLE001
            raise StorageError(describe_failure(url, err)) from None
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _object_size(url: str) -> tuple[int, float]:
    try:
        return stat(url)
    except FileNotFoundError as err:
        raise StorageError(describe_failure(url, err)) from None
