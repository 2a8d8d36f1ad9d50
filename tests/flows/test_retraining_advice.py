"""What the retraining flow advises when monitoring started it and the data is the champion's."""

import pandas as pd

from flows.retraining import advice
from pipeline.monitor import moved_columns


def test_the_camera_is_named_only_where_the_images_themselves_moved(project):
    figures = {"drifted": ["sharpness"], "sharpness_distance": 2.0, "sharpness_p": 1e-50}
    blurred = "; ".join(moved_columns(figures, pd.DataFrame({"sharpness": [0.2] * 5}),
                                      pd.DataFrame({"sharpness": [0.4] * 5})))  # fmt: skip
    assert blurred.startswith("the images are blurrier (median sharpness 0.2, 0.4 in the reference")
    said = advice(blurred, project)
    assert f"label examples of the new inputs and add them to {project.data.path}" in said
    assert "repair the camera" in said
    unknown = "52.1% of answers were 'unknown' (monitoring.max_unknown_rate 20%; reference 5.0%)"
    assert "label examples" in advice(unknown, project) and "repair the camera" not in advice(unknown, project)
    assert advice(None, project) == ""  # started by its schedule: nothing to advise
