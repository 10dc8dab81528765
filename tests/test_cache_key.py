"""The model cache's memory of a checkpoint's hash (cache.cached_sha256), without running anything: a warm start
reads no weights; any rewrite of the file (even with its size and mtime kept) is hashed again; other files and
other versions of the same file do not mix."""
from __future__ import annotations

import hashlib
import json
import os

from pix2pixhd_deploy import cache


def counting(monkeypatch):
    reads = []
    real = cache.file_sha256

    def read(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(cache, "file_sha256", read)
    return reads


def test_a_warm_start_reads_nothing_and_any_rewrite_is_read_again(tmp_path, monkeypatch):
    root, path = tmp_path / "cache", tmp_path / "latest_net_G.pth"
    root.mkdir()
    path.write_bytes(b"A" * 4096)
    reads = counting(monkeypatch)
    first = cache.cached_sha256(path, root)
    assert first == hashlib.sha256(b"A" * 4096).hexdigest() and len(reads) == 1
    assert cache.cached_sha256(path, root) == first and len(reads) == 1  # remembered: not read again
    table = json.loads((root / "hashes.json").read_text())
    assert list(table.values()) == [first]

    before = path.stat()
    with open(path, "r+b") as f:  # same size, same inode, the mtime put back: only the ctime tells
        f.write(b"B" * 4096)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = cache.cached_sha256(path, root)
    assert second == hashlib.sha256(b"B" * 4096).hexdigest() and len(reads) == 2
    table = json.loads((root / "hashes.json").read_text())
    assert list(table.values()) == [second]  # the file's older version is forgotten, not kept beside it
    assert cache.cached_sha256(path, root) == second and len(reads) == 2

    other = tmp_path / "other.pth"
    other.write_bytes(b"B" * 4096)
    assert cache.cached_sha256(other, root) == second and len(reads) == 3  # another path is its own entry
    assert len(json.loads((root / "hashes.json").read_text())) == 2


def test_a_damaged_table_is_read_around(tmp_path, monkeypatch):
    root, path = tmp_path / "cache", tmp_path / "m.onnx"
    root.mkdir()
    path.write_bytes(b"graph")
    (root / "hashes.json").write_text("{not json")
    reads = counting(monkeypatch)
    assert cache.cached_sha256(path, root) == hashlib.sha256(b"graph").hexdigest() and len(reads) == 1
    ident = next(iter(json.loads((root / "hashes.json").read_text())))
    (root / "hashes.json").write_text(json.dumps({ident: "short"}))  # a bad entry is not trusted
    assert cache.cached_sha256(path, root) == hashlib.sha256(b"graph").hexdigest() and len(reads) == 2
