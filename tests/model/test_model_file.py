import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.core.errors import PipelineError
from pipeline.model.model_file import ModelInfo, load_model, save_model


def info() -> ModelInfo:
    cfg = ModelConfig(
        backbone="seed_cnn", pretrained=False, widths=[4, 8], attention="soft", attention_dim=4, output_stride=4
    )
    return ModelInfo(cfg.model_dump(), ["a", "b"], 16, 1, [0.3], [0.2], run_id="r1", data_version="abc.dir")


def test_round_trip_gives_the_same_predictions(tmp_path):
    model = info().build()
    images = torch.randint(0, 256, (3, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        model(images)  # batch-norm statistics of its own, which the file must keep
    save_model(tmp_path / "m.pt", model.eval(), info())
    loaded, loaded_info = load_model(tmp_path / "m.pt")
    torch.testing.assert_close(loaded(images).logits, model(images).logits, rtol=1e-4, atol=1e-5)
    assert loaded_info == info()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())  # folded for scoring


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(PipelineError, match="no model file"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="unreadable model file"):
        load_model(tmp_path / "junk.pt")


def test_a_pickled_object_is_not_unpickled(tmp_path):
    torch.save({"format_version": 1, "info": object(), "state_dict": {}}, tmp_path / "evil.pt")
    with pytest.raises(PipelineError):
        load_model(tmp_path / "evil.pt")


def test_weights_of_another_architecture_are_refused_with_one_line(tmp_path):
    save_model(tmp_path / "m.pt", info().build(), info())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["info"]["model_config"]["widths"] = [8, 16]
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(PipelineError, match=r"other\.pt: not a model file of this project .*retrain") as error:
        load_model(tmp_path / "other.pt")
    assert "\n" not in str(error.value)


def test_unknown_model_settings_are_refused(tmp_path):
    save_model(tmp_path / "m.pt", info().build(), info())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["info"]["model_config"]["depth"] = 3
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(PipelineError, match="not a model file of this project"):
        load_model(tmp_path / "future.pt")


def test_a_model_folded_for_scoring_is_not_saved_over_a_model_file(tmp_path):
    save_model(tmp_path / "m.pt", info().build(), info())
    before = (tmp_path / "m.pt").read_bytes()
    folded, _ = load_model(tmp_path / "m.pt")
    with pytest.raises(PipelineError, match=r"m\.pt: .*folded for scoring; load it with fold=False"):
        save_model(tmp_path / "m.pt", folded, info())
    assert (tmp_path / "m.pt").read_bytes() == before
    unfolded, _ = load_model(tmp_path / "m.pt", fold=False)
    save_model(tmp_path / "again.pt", unfolded, info())
    load_model(tmp_path / "again.pt")
