"""tools/ship_encoder.py refuses, before any work, what would destroy or misplace files (#32)."""

import importlib.util
import sys
from pathlib import Path

import pytest

from decoder2vec.backbone.default_encoder import shipped_dir
from decoder2vec.backbone.default_model import SHIPPED_ENCODERS

TOOL = Path(__file__).resolve().parents[2] / "tools" / "ship_encoder.py"


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_encoder", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(ship, monkeypatch, *args) -> str:
    monkeypatch.setattr(sys, "argv", ["ship_encoder.py", *map(str, args), "--no-scores"])
    with pytest.raises(SystemExit) as exc:
        ship.main()
    return str(exc.value)


@pytest.fixture()
def convert_run(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text("{}")
    return run


def test_a_saved_encoder_is_not_replaced(ship, monkeypatch, tmp_path, convert_run):
    """A saved encoder has a recipe.json like a bundle; it was replaced wholesale, the user's NOTES.md
    with it. Only a folder holding the tool's marker may be replaced."""
    mine = tmp_path / "my-encoder"
    mine.mkdir()
    (mine / "recipe.json").write_text("{}")
    (mine / "NOTES.md").write_text("mine")
    message = run_tool(ship, monkeypatch, convert_run, "--dest", mine)
    assert f"--dest {mine} exists and is not a bundle written by this tool" in message
    assert sorted(p.name for p in mine.iterdir()) == ["NOTES.md", "recipe.json"]


@pytest.mark.parametrize("alias", ["../../x", "a/b", "..", "/abs"])
def test_an_alias_that_leaves_the_encoder_folder_is_refused(ship, monkeypatch, convert_run, alias):
    before = sorted(p.name for p in shipped_dir().parent.parent.iterdir())
    message = run_tool(ship, monkeypatch, convert_run, "--alias", alias)
    assert f"--alias {alias!r}: an alias is one folder name" in message
    assert sorted(p.name for p in shipped_dir().parent.parent.iterdir()) == before


@pytest.mark.parametrize("mode", [[], ["--student"], ["--simcse-only"]])
def test_a_missing_run_folder_is_one_line(ship, monkeypatch, tmp_path, mode):
    message = run_tool(ship, monkeypatch, tmp_path / "no-run", *mode, "--dest", tmp_path / "new")
    assert message == f"run folder {tmp_path / 'no-run'} does not exist (or is not a folder)"
    (tmp_path / "empty").mkdir()
    message = run_tool(ship, monkeypatch, tmp_path / "empty", *mode, "--dest", tmp_path / "new")
    assert "has no" in message and "it is not a finished" in message
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("alias", SHIPPED_ENCODERS)
def test_the_shipped_bundles_carry_the_marker(ship, alias):
    assert (shipped_dir(alias) / ship.MARKER).is_file()
    ship.check_dest(shipped_dir(alias))  # so the tool may replace them
