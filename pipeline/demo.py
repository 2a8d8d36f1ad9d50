"""A web page to try the model on your own pictures and see where it looks (Gradio, on 127.0.0.1).

    python -m pipeline.demo [--port 7860]      (make demo)

Drop or upload images (or pick one of the test split's): each gets the model's answer (the most
probable class, or with `data.positive_class` the threshold's verdict; "not sure" first when the
image is unlike anything the model was trained on), a top-5 chart and the
attention over the picture (small pictures enlarged) with an opacity slider. The page names the
model that answers (name, version, aliases, test accuracy, decision rule) and switches between `champion`,
`challenger` and any version. It loads the registry's MLflow model, as `make serve` does, and
decodes files with the project's own decoding (`pipeline/data/images.py`).
"""

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.overlay import overlay, reduced
from pipeline.core.ports import port_free
from pipeline.data.images import as_picture, decode_image, load_image
from pipeline.model.decision import top_classes

EXAMPLES = 10
SHOWN = 336  # smaller pictures are enlarged (nearest neighbour) for the page, so the map can be seen


@dataclass
class Answer:
    """One image's prediction, kept to redraw its overlay at another opacity."""

    name: str
    picture: Image.Image
    label: str  # the model's answer: its decision rule's class (pipeline/model/decision.py)
    top: dict[str, float]
    attention: np.ndarray
    unknown: bool = False  # unlike anything the model was trained on (pipeline/model/novelty.py)

    def headline(self) -> str:
        if self.unknown:
            return f"## Not sure: this does not look like anything I was trained on\nClosest answer: {self.label}"
        return f"## Answer: {self.label}"


class Registry:
    """The registry's versions of the model, loaded on first use."""

    def __init__(self, cfg: Config):
        from mlflow import MlflowClient

        from pipeline.core.tracking import connect

        connect(cfg)
        self.cfg, self.client, self.loaded = cfg, MlflowClient(), {}
        self.name = cfg.register.model_name

    def choices(self) -> list[str]:
        """`champion`, `challenger` (those that exist), then every version, newest first."""
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(self.name).aliases
        except MlflowException:
            return []
        versions = sorted(int(v.version) for v in self.client.search_model_versions(f"name='{self.name}'"))
        return [a for a in ("champion", "challenger") if a in aliases] + [f"version {v}" for v in reversed(versions)]

    def get(self, choice: str):
        """The pyfunc model and its description for a choice of `choices()`; an alias is looked up
        on every call, so a promotion shows at the next upload."""
        from pipeline.serve import describe, load

        reference = f"models:/{self.name}/{choice.removeprefix('version ')}" if choice.startswith("version ") else (
            f"models:/{self.name}@{choice}"
        )  # fmt: skip
        described = describe(reference)
        version = described["version"]
        if version not in self.loaded:
            self.loaded[version] = load(self.cfg, f"models:/{self.name}/{version}")
        model, about = self.loaded[version]
        return model, {**about, **described}  # as the registry says now (aliases)


def describe(about: dict) -> str:
    accuracy = f"{100 * about['test_accuracy']:.2f} %" if about.get("test_accuracy") is not None else "unknown"
    aliases = f" ({', '.join(about['aliases'])})" if about["aliases"] else ""
    return (
        f"**{about['name']}** version {about['version']}{aliases} · test accuracy {accuracy} · "
        f"{len(about['classes'])} classes · input {about['image_size']}×{about['image_size']}, "
        f"{about['channels']} channel(s) · answers {about['decision']}"
        + (' · says "not sure" for pictures unlike its training images' if about.get("unknown") else "")
    )


def classify(model, about: dict, paths: list[Path]) -> tuple[list[Answer], list[str]]:
    """Predictions for the image files that decode, through the registered model, and why each other
    one does not (named by its own name, not the upload's temporary folder)."""
    bits = about["bit_depth"]
    readable, pictures, images, refused = [], [], [], []
    for path in paths:
        try:
            picture = reduced(decode_image(path, 3, bits=bits))  # shown at its own size, up to LARGEST
            image = load_image(path, about["image_size"], about["channels"], bits=bits)
        except PipelineError as error:
            refused.append(str(error).replace(f"{path.parent}/", ""))
            continue
        readable.append(path)
        pictures.append(picture)
        images.append(image)
    if not readable:
        return [], refused
    out = model.predict(np.stack(images))
    unknown = out.get("unknown", [False] * len(readable))  # older registered versions have no detector
    answers = []
    for path, picture, label, row, maps, flag in zip(
        readable, pictures, out["class"], out["probabilities"], out["attention"], unknown, strict=True
    ):
        order = top_classes(row, 5)
        top = {about["classes"][i]: float(row[i]) for i in order}
        answers.append(Answer(path.name, picture, str(label), top, maps, bool(flag)))
    return answers, refused


def example_files(cfg: Config, folder: Path) -> list[str]:
    """A few test-split images (one per class first) as PNG files, when the pipeline has run."""
    from pipeline.data.splits import TABLE, load_split

    if not (cfg.paths.processed / "test" / TABLE).is_file():
        return []
    test = load_split(cfg.paths.processed, "test", "stream")
    labels = test.labels.tolist()
    chosen = list(dict.fromkeys(labels.index(label) for label in sorted(set(labels))))[:EXAMPLES]
    files = []
    for index in chosen:
        path = folder / f"test-{index:05d}.png"
        as_picture(test.images[index].numpy()).save(path)
        files.append(str(path))
    return files


def build(cfg: Config, registry: Registry, examples: list[str]):
    """The page."""
    import gradio as gr

    choices = registry.choices()
    if not choices:
        raise PipelineError(f"{registry.name}: no model in the registry; run the pipeline first ('make run')")
    registry.get(choices[0])  # loaded before the first visitor

    def shown(answer: Answer, opacity: float) -> Image.Image:
        picture = answer.picture
        if max(picture.size) < SHOWN:
            scale = SHOWN / max(picture.size)
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.NEAREST)
        return overlay(picture, answer.attention, opacity)

    def answer_views(answers: list[Answer], opacity: float, selected: int):
        items = [(shown(a, opacity), f"{a.name}: {'not sure · ' if a.unknown else ''}{a.label}") for a in answers]
        gallery = gr.Gallery(items, visible=len(answers) > 1)  # one image: the panel above is enough
        if not answers:
            return gallery, "", None, None
        chosen = answers[min(selected, len(answers) - 1)]
        return gallery, chosen.headline(), chosen.top, shown(chosen, opacity)

    def run(files: list[str] | None, choice: str, opacity: float):
        model, about = registry.get(choice)
        answers, refused = classify(model, about, [Path(f) for f in files or []])
        if refused and not answers:
            raise gr.Error("; ".join(refused))
        for reason in refused:  # the others are answered
            gr.Warning(reason)
        return answers, 0, describe(about), *answer_views(answers, opacity, 0)

    with gr.Blocks(title="Attention classifier") as page:
        gr.Markdown("# Where does the model look?\nDrop images, or pick one from the test split.")
        with gr.Row():
            with gr.Column(scale=1):
                choice = gr.Dropdown(choices, value=choices[0], label="Model", elem_id="model")
                info = gr.Markdown(elem_id="model-info")
                files = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="upload")
                opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Attention opacity", elem_id="opacity")
                picks = gr.Gallery(examples, label="Examples from the test split", columns=5, height="auto",
                                   allow_preview=False, elem_id="examples", visible=bool(examples))  # fmt: skip
            with gr.Column(scale=2):
                answer = gr.Markdown(elem_id="answer")
                top = gr.Label(num_top_classes=5, label="Top 5 probabilities", elem_id="top5")
                picture = gr.Image(type="pil", label="Attention", elem_id="overlay", interactive=False, height=360)
                gallery = gr.Gallery(label="All images (select one)", columns=8, height=220, allow_preview=False,
                                     object_fit="contain", visible=False, elem_id="results")  # fmt: skip
        answers, selected = gr.State([]), gr.State(0)
        views = [gallery, answer, top, picture]
        outputs = [answers, selected, info, *views]
        files.change(run, [files, choice, opacity], outputs)
        choice.change(run, [files, choice, opacity], outputs)
        page.load(run, [files, choice, opacity], outputs)
        opacity.release(lambda a, o, s: answer_views(a, o, s), [answers, opacity, selected], views)

        def pick_example(evt: gr.SelectData):
            return [examples[evt.index]]

        picks.select(pick_example, None, files)

        def select(a: list[Answer], o: float, evt: gr.SelectData):
            return evt.index, *answer_views(a, o, evt.index)

        gallery.select(select, [answers, opacity], [selected, *views])
    return page


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if not port_free("127.0.0.1", args.port):
        raise PipelineError(f"127.0.0.1:{args.port} is taken (another demo, make demo?): stop it, or pass --port")
    cfg = load_config()
    folder = Path(tempfile.mkdtemp(prefix="attention-demo-"))
    page = build(cfg, Registry(cfg), example_files(cfg, folder))
    page.launch(server_name="127.0.0.1", server_port=args.port, allowed_paths=[str(folder)], show_error=True)


if __name__ == "__main__":
    run_cli(main)
