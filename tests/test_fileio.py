"""fileio: durable atomic writes (fsync before the rename, the folder after it) and bookkeeping files that never
follow links."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from pix2pixhd_deploy import fileio
from pix2pixhd_deploy.errors import UserError


def test_a_file_is_fsynced_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fileio.atomic_save_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert events == ["fsync file", "rename", "fsync folder"]
    events.clear()
    fileio.atomic_write_text(tmp_path / "manifest.json", "{}")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_own_files_never_follow_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("intact")
    (tmp_path / "lock").symlink_to(victim)
    with pytest.raises(UserError, match="the lock is a symbolic link"):
        fileio.open_own_file(tmp_path / "lock", what="lock")
    (tmp_path / "hard").hardlink_to(victim)  # two names: someone else's file, perhaps
    with pytest.raises(UserError, match="not a plain file of yours"):
        fileio.open_own_file(tmp_path / "hard", what="journal")
    assert victim.read_text() == "intact"
    fd = fileio.open_own_file(tmp_path / "fresh", what="lock")
    os.close(fd)
    assert (tmp_path / "fresh").is_file()
