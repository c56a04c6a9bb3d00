"""A forgetting check of rotation data (`--mode eval` of a fine-tuned run on its source's data) measures
the generated motion on the figure the real clips stand on: the evaluated data's skeleton."""

import json
import re

import numpy as np
from test_init_from import _data_args
from test_resume import tiny_config

from motion_ddpm_jax import evaluate, sampling, train


def _config(tmp_path, data_args, **train_fields):
    """tiny_config without the geometric loss: what the runs train is not what is checked here (the
    evaluation's posing is), and its forward kinematics, each skeleton's offsets compiled in, made the two
    runs' train steps two programs to compile; without it the fine-tuned run's step is the source's."""
    config = tiny_config(tmp_path, data_args, **train_fields)
    config.loss.use_geometric_loss = False
    return config


def test_a_forgetting_check_poses_the_generated_rotations_on_the_evaluated_datas_skeleton(tmp_path):
    """axis_angle: a run fine-tuned on speakers 10% taller (every BVH OFFSET x 1.1), evaluated on its
    source's data. Rotations carry no bone lengths, and the real clips are posed on that data's skeleton:
    the generated ones had been posed on the fine-tuning data's, so the report read a bone error of 10%
    (and speeds and distances of a figure 10% larger) that no model of rotations can make. Posed on the
    evaluated data's skeleton, the generated bones are its bones (error ~0, float32 rounding), and a note
    says on which skeleton they stand."""
    rotations = "--config.data.representation=axis_angle"
    args_a = [*_data_args(tmp_path / "a", seed=0), rotations]
    args_b = [*_data_args(tmp_path / "b", seed=5), rotations]
    for path in (tmp_path / "b" / "raw").rglob("*.bvh"):
        text = path.read_text()
        taller = re.sub(
            r"OFFSET\s+(\S+)\s+(\S+)\s+(\S+)",
            lambda m: "OFFSET " + " ".join(f"{1.1 * float(v):.6f}" for v in m.groups()),
            text,
        )
        path.write_text(taller)
    train.run(
        _config(tmp_path, args_a, num_steps=2, save_every_steps=2), tmp_path / "src", log=lambda *_: None
    )
    config = _config(tmp_path, args_b, num_steps=2, save_every_steps=2)
    config.train.init_from = str(tmp_path / "src")
    train.run(config, tmp_path / "tall", log=lambda *_: None)
    a_bones = sampling.load_model(tmp_path / "src").skeleton.bone_lengths()
    tall_bones = sampling.load_model(tmp_path / "tall").skeleton.bone_lengths()
    np.testing.assert_allclose(tall_bones, 1.1 * a_bones, rtol=1e-4)  # the taller data's, as prepared

    config = _config(tmp_path, args_a, num_steps=2)
    config.sample.update(steps=2, render=False)
    config.eval.update(num_clips=3, output=str(tmp_path / "forgetting.json"))
    lines = []
    evaluate.run(config, tmp_path / "tall", log=lines.append)
    report = json.loads((tmp_path / "forgetting.json").read_text())
    assert report["data_trained_on"] == "init_from source's", report["data_trained_on"]
    bone_error = report["metrics"]["bone_error/mean"]
    assert bone_error["real"] < 1e-5 and bone_error["generated"] < 1e-5, bone_error
    said = [line for line in lines if "generated rotations are posed on this data's skeleton" in line]
    assert said and "bones differ by up to 10.0%" in said[0], said
