"""BloodMNIST download: fetch the official MedMNIST file once with pooch, verify it, cache it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from blood_automl.errors import DataError

CACHE_ENV = "BLOOD_AUTOML_CACHE"
"""Environment variable that overrides the cache folder (default: the user cache dir)."""

ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
"""MedMNIST v3 (MedMNIST+) record on Zenodo, as in MedMNIST's own ``medmnist/info.py``."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name in the cache, where it comes from and its md5."""

    filename: str
    url: str
    md5: str


def _remote(name: str, md5: str) -> RemoteFile:
    return RemoteFile(filename=name, url=f"{ZENODO_RECORD}/{name}?download=1", md5=md5)


BLOODMNIST_FILES: dict[int, RemoteFile] = {
    28: _remote("bloodmnist.npz", "7053d0359d879ad8a5505303e11de1dc"),
    64: _remote("bloodmnist_64.npz", "2b94928a2ae4916078ca51e05b6b800b"),
    128: _remote("bloodmnist_128.npz", "adace1e0ed228fccda1f39692059dd4c"),
    224: _remote("bloodmnist_224.npz", "b718ff6835fcbdb22ba9eacccd7b2601"),
}
"""BloodMNIST files by image size, with the md5 values published in MedMNIST's info.py."""


def default_cache_dir() -> Path:
    """The cache folder: ``$BLOOD_AUTOML_CACHE`` if set, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("blood-automl", appauthor=False))


def fetch_bloodmnist(
    size: int = 28,
    *,
    cache_dir: Path | None = None,
    url: str | None = None,
    md5: str | None = None,
) -> Path:
    """Return the local path of the BloodMNIST file of ``size``, downloading it only if needed.

    The file lives in ``cache_dir/medmnist/`` (``cache_dir`` defaults to
    :func:`default_cache_dir`). A cached file whose md5 matches is used as it is; otherwise it
    is downloaded to a temporary file, checked, and only then moved into place, so a failed
    or wrong download leaves nothing in the cache. ``url`` and ``md5`` override the official
    values (tests use a server on 127.0.0.1).
    """
    if size not in BLOODMNIST_FILES:
        raise DataError(
            f"bloodmnist:{size}: unknown BloodMNIST size; use 28, 64, 128 or 224 "
            "(bloodmnist, bloodmnist:64, bloodmnist:128, bloodmnist:224)"
        )
    remote = BLOODMNIST_FILES[size]
    url = url or remote.url
    md5 = (md5 or remote.md5).lower()
    folder = (cache_dir if cache_dir is not None else default_cache_dir()) / "medmnist"
    target = folder / remote.filename
    name = "bloodmnist" if size == 28 else f"bloodmnist:{size}"

    import pooch  # lazy: only needed when BloodMNIST is used
    import requests

    if target.is_file() and pooch.file_hash(str(target), alg="md5") == md5:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = pooch.retrieve(
            url,
            known_hash=f"md5:{md5}",
            fname=remote.filename,
            path=folder,
            progressbar=False,
        )
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise DataError(
            f"{name}: the file downloaded from {url} does not have the expected md5 {md5}, so it "
            f"was deleted and nothing was cached in {folder}; try again later, or download "
            f"{remote.filename} by hand, check its md5 and put it in {folder}"
        ) from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(
            f"{name}: cannot download {url} ({type(exc).__name__}: {reason}); check the network, "
            f"or download {remote.filename} (md5 {md5}) by hand and put it in {folder}"
        ) from exc
    return Path(path)
