"""Issue #22, items 2 and 4: what decoder2vec publishes gets the mode the umask gives an ordinary file or
folder (safetensors and mkstemp write 0600, mkdtemp 0700), and reaches the disk before its rename."""

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from decoder2vec.io import publish_folder, replace_entries, replace_folder, write_file_atomic


def build(folder: Path) -> None:
    """What a model save does: safetensors weights (written 0600 by safetensors) and a sub-folder."""
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text("{}")


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
    ids=["umask022", "umask077"],
)
def test_published_files_and_folders_follow_the_umask(tiny_llama, tmp_path, umask, file_mode, dir_mode):
    from decoder2vec import Encoder

    encoder = Encoder.from_pretrained(tiny_llama)
    old = os.umask(umask)
    try:
        folders = [
            encoder.save(tmp_path / "encoder"),  # Encoder.save and convert's output (replace_entries)
            publish_folder(tmp_path / "cache", build),  # the model caches
            replace_folder(tmp_path / "adapter", build),  # a run's adapter/ and merged/
            replace_entries(tmp_path / "out", build),
        ]
        write_file_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    for folder in folders:
        for name, mode in modes(folder).items():
            assert mode == (dir_mode if (tmp_path / name).is_dir() else file_mode), name
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == file_mode


def test_files_are_flushed_to_disk_before_the_rename_publishes_them(tmp_path, monkeypatch):
    synced: set[int] = set()
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    def published(src) -> None:
        src = Path(src)
        files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        for path in files:
            assert path.stat().st_ino in synced, f"{path.name} renamed into place before fsync"

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda src, dst: (published(src), real_replace(src, dst))[1])
    monkeypatch.setattr(os, "rename", lambda src, dst: (published(src), real_rename(src, dst))[1])
    write_file_atomic(tmp_path / "a.json", "{}")
    publish_folder(tmp_path / "cache", build)
    replace_folder(tmp_path / "adapter", build)
    replace_entries(tmp_path / "out", build)
    assert (tmp_path / "a.json").read_text() == "{}" and (tmp_path / "out" / "sub" / "config.json").is_file()
    assert len(synced) >= 7  # one file, then two in each of the three folders
