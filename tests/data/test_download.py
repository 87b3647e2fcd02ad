"""BloodMNIST download against a real HTTP server on 127.0.0.1: checksum, cache, no re-download."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from blood_automl.data import PBC_CLASS_NAMES, load_dataset
from blood_automl.data import download as dl
from blood_automl.errors import DataError
from conftest import make_images


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                outer.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}?download=1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _medmnist_file(path: Path, size: int = 28) -> str:
    """A small MedMNIST-format npz (uint8 (N, 1) labels, no class names); returns its md5."""
    images, labels = make_images(48, size=size, seed=3)
    lab = labels[:, None].astype(np.uint8)
    np.savez_compressed(
        path,
        train_images=images[:32],
        train_labels=lab[:32],
        val_images=images[32:40],
        val_labels=lab[32:40],
        test_images=images[40:],
        test_labels=lab[40:],
    )
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[_Server, dict[int, str]]]:
    root = tmp_path / "served"
    root.mkdir()
    md5 = {
        64: _medmnist_file(root / "bloodmnist_64.npz", 64),
        28: _medmnist_file(root / "bloodmnist.npz", 28),
    }
    srv = _Server(root)
    yield srv, md5
    srv.close()


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_published_checksums_are_the_medmnist_ones() -> None:
    assert sorted(dl.BLOODMNIST_FILES) == [28, 64, 128, 224]
    assert dl.BLOODMNIST_FILES[28].md5 == "7053d0359d879ad8a5505303e11de1dc"
    assert dl.BLOODMNIST_FILES[224].filename == "bloodmnist_224.npz"
    for f in dl.BLOODMNIST_FILES.values():
        assert f.url.startswith("https://zenodo.org/records/10519652/files/")
        assert len(f.md5) == 32 and int(f.md5, 16) >= 0


def test_download_verifies_caches_and_never_downloads_again(
    tmp_path: Path, server: tuple[_Server, dict[int, str]]
) -> None:
    srv, md5 = server
    cache = tmp_path / "cache"
    path = dl.fetch_bloodmnist(64, cache_dir=cache, url=srv.url("bloodmnist_64.npz"), md5=md5[64])
    assert path == cache / "medmnist" / "bloodmnist_64.npz"
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5[64]
    assert len(srv.requests) == 1
    again = dl.fetch_bloodmnist(64, cache_dir=cache, url=srv.url("bloodmnist_64.npz"), md5=md5[64])
    assert again == path
    assert len(srv.requests) == 1  # served from the cache
    assert _cache_files(cache) == ["bloodmnist_64.npz"]


def test_wrong_checksum_is_refused_and_leaves_nothing(
    tmp_path: Path, server: tuple[_Server, dict[int, str]]
) -> None:
    srv, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        dl.fetch_bloodmnist(64, cache_dir=cache, url=srv.url("bloodmnist_64.npz"), md5="0" * 32)
    message = str(info.value)
    assert "\n" not in message
    assert "does not have the expected md5 " + "0" * 32 in message
    assert "bloodmnist:64" in message
    assert _cache_files(cache) == []


def test_corrupt_cached_file_is_replaced(
    tmp_path: Path, server: tuple[_Server, dict[int, str]]
) -> None:
    srv, md5 = server
    cache = tmp_path / "cache"
    (cache / "medmnist").mkdir(parents=True)
    (cache / "medmnist" / "bloodmnist.npz").write_bytes(b"half a download")
    path = dl.fetch_bloodmnist(28, cache_dir=cache, url=srv.url("bloodmnist.npz"), md5=md5[28])
    assert hashlib.md5(path.read_bytes()).hexdigest() == md5[28]


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bloodmnist_128.npz"
    with pytest.raises(DataError) as info:
        dl.fetch_bloodmnist(128, cache_dir=tmp_path / "cache", url=url, md5="1" * 32)
    message = str(info.value)
    assert "\n" not in message and "cannot download" in message and "bloodmnist_128.npz" in message
    assert _cache_files(tmp_path / "cache") == []


def test_load_dataset_bloodmnist_uses_env_cache(
    tmp_path: Path, server: tuple[_Server, dict[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, md5 = server
    monkeypatch.setitem(
        dl.BLOODMNIST_FILES,
        64,
        dl.RemoteFile("bloodmnist_64.npz", srv.url("bloodmnist_64.npz"), md5[64]),
    )
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "envcache"))
    monkeypatch.chdir(tmp_path)
    assert dl.default_cache_dir() == tmp_path / "envcache"
    ds = load_dataset("bloodmnist:64", image_size=32)
    assert ds.format == "bloodmnist"
    assert ds.source == "bloodmnist:64"
    assert ds.class_names == PBC_CLASS_NAMES
    assert ds.images.shape == (48, 32, 32, 3)
    assert ds.predefined_split is not None and np.bincount(ds.predefined_split).tolist() == [
        32,
        8,
        8,
    ]
    assert any("64x64 to 32x32" in n for n in ds.notes)
    assert (tmp_path / "envcache" / "medmnist" / "bloodmnist_64.npz").is_file()
    load_dataset("bloodmnist:64", image_size=32)
    assert len(srv.requests) == 1


def test_default_cache_dir_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.CACHE_ENV, raising=False)
    assert "blood-automl" in str(dl.default_cache_dir())
