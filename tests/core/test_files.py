import pytest

from pipeline.core.files import atomic_path, replace_dir, write_json


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temporary:
        temporary.write_text('{"accura')
        raise KeyboardInterrupt
    assert target.read_text() == '{\n  "accuracy": 0.9\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_folder_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "processed"
    target.mkdir()
    (target / "train.pt").write_text("good")
    with pytest.raises(RuntimeError), replace_dir(target) as staging:
        (staging / "train.pt").write_text("half")
        raise RuntimeError("killed")
    assert (target / "train.pt").read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["processed"]
    with replace_dir(target) as staging:
        (staging / "val.pt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["val.pt"]
