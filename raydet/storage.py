"""One storage layer: every user path raydet reads or writes goes through here.

A path is a local path, or a URI read through ``pyarrow.fs`` (the library Ray
Train uses for ``storage_path``): ``file://``, ``s3://``, ``gs://``,
``hdfs://``.  Credentials and endpoints come from each process's usual
environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL`` for MinIO and other
S3-compatible stores, ``GOOGLE_APPLICATION_CREDENTIALS`` …), so a Ray worker on
another node reads the same URI as the driver.

Missing files raise ``FileNotFoundError`` (with the path as given) whatever the
storage; other failures raise ``OSError``.  Local paths use the operating
system directly (the hot path: images decoded on every epoch).
"""
from __future__ import annotations

import errno
import functools
import os
import posixpath
import tempfile
import urllib.parse

#: URI schemes whose files are named by absolute path (``file:///data/x``) rather than ``bucket/key``.
_PATH_SCHEMES = ("file", "hdfs", "viewfs")


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/…`` for local paths and URIs; a name that is absolute or a URI replaces what precedes it."""
    path = str(base)
    for name in names:
        if not path or is_uri(name) or os.path.isabs(name):
            path = name
        elif is_uri(path):
            path = posixpath.join(path, name)
        else:
            path = os.path.join(path, name)
    return path


def absolute(path: str | os.PathLike) -> str:
    """A local path made absolute (``~`` expanded, from the current directory); a URI unchanged.

    Ray workers run in another working directory: the driver resolves paths before shipping them.
    """
    path = str(path)
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def name_of(path: str) -> str:
    """The last component of a path or URI (``s3://b/runs/x/`` -> ``x``)."""
    return posixpath.basename(str(path).rstrip("/")) if is_uri(path) else os.path.basename(os.path.normpath(path))


@functools.lru_cache(maxsize=32)
def _filesystem(root: str):
    """One ``pyarrow.fs`` filesystem per ``scheme://authority`` (creating one can cost a network call)."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(root + "/")[0]


def _resolve(uri: str):
    """``(pyarrow filesystem, path inside it)`` of a URI; ``OSError`` for a scheme pyarrow cannot read."""
    import pyarrow

    scheme, rest = uri.split("://", 1)
    authority, _, key = rest.partition("/")
    inner = "/" + urllib.parse.unquote(key) if scheme in _PATH_SCHEMES else rest  # as pyarrow's from_uri reads it
    try:
        filesystem = _filesystem(f"{scheme}://{authority}")
    except pyarrow.ArrowException as err:
        raise OSError(f"unsupported storage URI {uri}: {str(err).splitlines()[0]}") from None
    return filesystem, inner.rstrip("/") or "/"


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such file", path)


def _info(path: str):
    import pyarrow.fs

    filesystem, inner = _resolve(path)
    info = filesystem.get_file_info(inner)
    return info.type if info.type != pyarrow.fs.FileType.NotFound else None


def exists(path: str | os.PathLike) -> bool:
    path = str(path)
    return os.path.exists(path) if not is_uri(path) else _info(path) is not None


def is_dir(path: str | os.PathLike) -> bool:
    import pyarrow.fs

    path = str(path)
    return os.path.isdir(path) if not is_uri(path) else _info(path) == pyarrow.fs.FileType.Directory


def is_file(path: str | os.PathLike) -> bool:
    import pyarrow.fs

    path = str(path)
    return os.path.isfile(path) if not is_uri(path) else _info(path) == pyarrow.fs.FileType.File


def list_dir(path: str | os.PathLike) -> list[str]:
    """The sorted names (not paths) in a folder; ``FileNotFoundError`` when it is missing."""
    import pyarrow.fs

    path = str(path)
    if not is_uri(path):
        return sorted(os.listdir(path))
    filesystem, inner = _resolve(path)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=False))
    except FileNotFoundError:
        raise _not_found(path) from None
    return sorted(posixpath.basename(info.path) for info in infos)


def walk(folder: str | os.PathLike) -> list[str]:
    """Every file under ``folder`` (a local path or a URI), at any depth, as paths (URIs) of its own kind,
    sorted; ``FileNotFoundError`` when the folder is missing.  One listing request for a URI."""
    import pyarrow.fs

    folder = str(folder)
    if not is_uri(folder):
        if not os.path.isdir(folder):
            raise _not_found(folder)
        return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)
    filesystem, inner = _resolve(folder)
    try:
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True, allow_not_found=False))
    except FileNotFoundError:
        raise _not_found(folder) from None
    base = folder.rstrip("/")
    return sorted(base + info.path[len(inner.rstrip("/")):] for info in infos
                  if info.type == pyarrow.fs.FileType.File)


def read_bytes(path: str | os.PathLike) -> bytes:
    path = str(path)
    try:
        if not is_uri(path):
            with open(path, "rb") as stream:
                return stream.read()
        filesystem, inner = _resolve(path)
        with filesystem.open_input_file(inner) as stream:
            return stream.read()
    except FileNotFoundError:
        raise _not_found(path) from None


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write a file whole, creating its folder; a local file appears complete or not at all
    (object stores do that themselves)."""
    path = str(path)
    if not is_uri(path):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(partial, 0o644)
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise
        return
    filesystem, inner = _resolve(path)
    if path.split("://", 1)[0] in _PATH_SCHEMES:  # object stores have no folders to create
        filesystem.create_dir(posixpath.dirname(inner), recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        stream.write(data)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def describe(error: BaseException) -> str:
    """A one-line reason for a failed read or write (``FileNotFoundError`` -> "not found")."""
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__

