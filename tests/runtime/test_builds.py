"""The rule that keeps ohlora's builders and runs off what they did not make (runtime/builds.py)."""

import json
import os
import stat

import pytest
from snapshots import difference, snapshot

from ohlora_cli.errors import RecipeError
from ohlora_cli.runtime import builds

RULE = {"made_by": "data.synthetic", "key": "data.csv", "what": "the test data"}


def write_two(folder):
    (folder / "a.txt").write_text("a")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_text("b")


def test_builds_a_missing_folder_atomically_with_a_marker_listing_its_files(tmp_path):
    target = tmp_path / "new" / "data"
    assert builds.build_folder(target, write_two, **RULE) is True
    marker = json.loads((target / builds.MARKER).read_text())
    assert marker["made_by"] == "data.synthetic" and marker["files"] == ["a.txt", "sub/b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["data"]  # no temporary folder left
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o777 & ~mask  # the usual permissions, not mkdtemp's 0700


@pytest.mark.parametrize("contents", [[], ["labels.csv", "images/"]])
def test_refuses_a_folder_it_did_not_make_and_touches_nothing(tmp_path, contents):
    target = tmp_path / "mydata"
    target.mkdir()
    for name in contents:
        (target / name.rstrip("/")).mkdir() if name.endswith("/") else (target / name).write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(RecipeError) as refused:
        builds.build_folder(target, write_two, **RULE)
    message = str(refused.value)
    assert message.startswith("data.csv: ") and str(target) in message and "ohlora did not create" in message
    assert ("images/, labels.csv" if contents else "it holds: nothing") in message
    assert difference(before, snapshot(tmp_path)) == {}


def test_rebuilds_its_own_folder_but_not_over_a_file_it_did_not_write(tmp_path):
    target = tmp_path / "data"
    builds.build_folder(target, write_two, **RULE)
    (target / "a.txt").unlink()  # an earlier build, partly gone: rebuilt in place
    assert builds.build_folder(target, write_two, **RULE) is True
    assert (target / "a.txt").read_text() == "a"
    (target / "notes.txt").write_text("the user's")
    with pytest.raises(RecipeError, match="notes.txt"):
        builds.build_folder(target, write_two, **RULE)
    assert (target / "notes.txt").read_text() == "the user's"


def test_another_builders_folder_or_another_build_is_refused(tmp_path):
    target = tmp_path / "data"
    builds.build_folder(target, write_two, **RULE, same={"csv": "labels.csv"})
    with pytest.raises(RecipeError, match="made by ohlora's data.synthetic"):
        builds.build_folder(target, write_two, made_by="model.tiny", key="model.path", what="a model")
    with pytest.raises(RecipeError, match="csv 'labels.csv', not 'other.csv'"):
        builds.build_folder(target, write_two, **RULE, same={"csv": "other.csv"})


def test_output_dir_rule(tmp_path):
    builds.check_output_dir(tmp_path / "new")  # missing: fine, and nothing is created by a check
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert builds.claim_output_dir(empty) == empty and builds.read_marker(empty)["made_by"] == "run"
    builds.claim_output_dir(empty)  # an ohlora run folder: fine again
    theirs = tmp_path / "project"
    theirs.mkdir()
    (theirs / "recipe.yaml").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(RecipeError) as refused:
        builds.claim_output_dir(theirs)
    assert f"output_dir: {theirs} is not an ohlora run folder; it holds: recipe.yaml" in str(refused.value)
    assert difference(before, snapshot(tmp_path)) == {}
