import json

import torch

from pipeline import preprocess, validate
from pipeline.core.config import load_config
from pipeline.data.splits import load_split
from pipeline.training.runtime import predict_batches, select_runtime
from pipeline.training.steps import attention_entropy, build_training, train_epoch


def test_attention_entropy_is_one_for_uniform_maps_and_zero_for_one_cell():
    uniform = torch.full((2, 4, 4), 1 / 16)
    peaked = torch.zeros(2, 4, 4)
    peaked[:, 1, 2] = 1.0
    torch.testing.assert_close(attention_entropy(uniform), torch.ones(2))
    torch.testing.assert_close(attention_entropy(peaked), torch.zeros(2))


def test_the_entropy_term_makes_the_maps_commit_to_a_region(project):
    validate.run(project)
    preprocess.run(project)
    meta = json.loads((project.paths.processed / "meta.json").read_text())
    runtime = select_runtime("cpu", "fp32")
    data = load_split(project.paths.processed, "train", "memory")
    entropy = {}
    for weight in (0.0, 2.0):
        cfg = load_config(overrides={"train.attention_entropy": weight, "train.epochs": 8})
        training = build_training(cfg, meta, runtime, data.labels)
        for epoch in range(1, cfg.train.epochs + 1):
            train_epoch(training, data, cfg.train, runtime, epoch)
        training.model.eval()
        entropy[weight] = attention_entropy(predict_batches(training.model, data.images, 64, runtime).attention)
    assert entropy[2.0].mean() < entropy[0.0].mean() - 0.1, entropy
