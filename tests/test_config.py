"""config.validate: every shipped config passes; a bad value fails naming the field."""

import importlib.util
import re
from pathlib import Path

import pytest

from motion_ddpm_jax.config import (
    CHOICES,
    MINIMUM,
    base_config,
    listed,
    schedule_problem,
    validate,
    with_defaults,
)
from motion_ddpm_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    validate(load(path))


def set_field(config, dotted, value):
    *sections, leaf = dotted.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[leaf] = value


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_a_value_outside_the_choices_names_the_field_and_the_choices(field):
    config = base_config()
    set_field(config, field, "no_such_value")
    with pytest.raises(UserError, match=rf"{field} is 'no_such_value'; expected one of {CHOICES[field][0]}"):
        validate(config)


def test_a_config_lacking_a_field_or_section_is_refused_naming_them():
    """A field deleted in a config file had failed late: a section after the data loaded, train.log_every
    after the compile (with the run record written)."""
    config = base_config()
    del config.train["log_every"]
    with pytest.raises(UserError, match=r"config lacks field\(s\) train.log_every; a config file starts"):
        validate(config)
    config = base_config()
    del config["loss"]
    with pytest.raises(UserError, match=r"lacks field\(s\) loss.acceleration_weight, loss.aux_weighting, "):
        validate(config)


def test_progress_samples_may_not_ask_for_more_ddim_steps_than_the_diffusion_has():
    config = base_config()
    config.diffusion.steps, config.train.sample_every = 30, 100
    with pytest.raises(UserError, match=r"sample.steps is 50, more than diffusion.steps \(30\)"):
        validate(config)
    config.train.sample_every = 0  # no progress samples: --mode sample checks against the checkpoint
    validate(config)
    config.diffusion.steps, config.sample.steps, config.train.sample_every = 100, 1, 100
    with pytest.raises(UserError, match=r"sample.steps=1 and sample.ddim_spacing=leading: .* t=0"):
        validate(config)
    config.sample.ddim_spacing = "trailing"  # its one step is t = 99
    validate(config)
    config.sample.sampler, config.sample.ddim_spacing = "dpmpp_2m", "leading"  # its steps too
    with pytest.raises(UserError, match=r"sample.steps=1 and sample.ddim_spacing=leading: .* t=0"):
        validate(config)
    config.sample.ddim_spacing, config.sample.eta = "trailing", 0.5
    with pytest.raises(UserError, match=r"sample.eta is 0.5 but sample.sampler=dpmpp_2m is deterministic"):
        validate(config)
    config.sample.eta = 0.0
    validate(config)
    # Guidance from a model that never dropped its caption: every progress sample would be refused.
    config.sample.guidance_scale, config.model.cond_drop_prob = 2.5, 0.0
    with pytest.raises(UserError, match=r"guidance_scale is 2.5 but model.cond_drop_prob is 0.0: .*progress"):
        validate(config)
    config.train.sample_every = 0  # no progress samples: nothing to refuse
    validate(config)
    config.train.sample_every, config.sample.guidance_scale = 100, 1.0  # the conditional model alone
    validate(config)


def test_the_choices_are_the_ones_the_modules_know():
    """config.py keeps its choices as plain tuples (it imports no jax): each must be the names the module
    that reads the field knows (a name added to a module, e.g. a sampler, and not here, or the reverse,
    would be refused by validation or reach a module that cannot run it)."""
    from motion_ddpm_jax import diffusion, distributed, losses, model, sampling
    from motion_ddpm_jax.data import motion_text

    known = {
        "data.representation": motion_text.REPRESENTATIONS,
        "diffusion.schedule": diffusion.SCHEDULE_NAMES,
        "diffusion.prediction": diffusion.PREDICTION_KINDS,
        "loss.aux_weighting": losses.AUX_WEIGHTINGS,
        "model.attention": model.ATTENTION_KINDS,
        "model.compute_dtype": model.COMPUTE_DTYPES,
        "model.kernels": model.KERNELS,
        "sample.sampler": sampling.SAMPLERS,
        "sample.ddim_spacing": diffusion.DDIM_SPACINGS,
        "sample.group_lengths": tuple(sampling.GROUP_LENGTHS),
        "eval.split": motion_text.SPLITS,
        "distributed.enabled": distributed.ENABLED_VALUES,
    }
    for field, names in known.items():
        assert tuple(CHOICES[field]) == tuple(names), field


def test_progress_captions_with_an_empty_one_are_refused_and_blank_means_the_validation_captions():
    """'wave||nod' had dropped the empty caption silently (as sample.text refuses it)."""
    config = base_config()
    for given, number in (("wave||nod", "2 of the 3"), ("wave|", "2 of the 2"), (" | nod", "1 of the 2")):
        config.train.sample_captions = given
        expected = rf"train.sample_captions {re.escape(repr(given))} .*caption \(number {number} "
        with pytest.raises(UserError, match=expected):
            validate(config)
    for fine in ("", "  ", " wave | nod "):
        config.train.sample_captions = fine
        validate(config)


@pytest.mark.parametrize("field", sorted(MINIMUM))
def test_a_number_below_its_minimum_names_the_field(field):
    config = base_config()
    value = type(MINIMUM[field])(MINIMUM[field] - 1)
    set_field(config, field, value)
    with pytest.raises(UserError, match=rf"{field} is"):
        validate(config)


def test_ranges_and_head_divisibility():
    config = base_config()
    config.model.cond_drop_prob = 1.5
    with pytest.raises(UserError, match="model.cond_drop_prob is 1.5; expected a number in"):
        validate(config)
    config = base_config()
    config.model.num_heads = 3
    with pytest.raises(UserError, match="latent_dim=512 must be divisible by model.num_heads=3"):
        validate(config)


def test_an_ema_decay_of_one_and_a_run_of_no_steps_are_refused():
    """optim.ema_decay = 1 would leave the average at its start and divide its debiasing by zero (NaN
    parameters); train.num_steps = num_epochs = 0 is a run of no steps."""
    config = base_config()
    config.optim.ema_decay = 0.0
    validate(config)  # no average: the parameters themselves
    config.optim.ema_decay = 1.0
    with pytest.raises(UserError, match=r"optim.ema_decay is 1.0; expected a number in \[0.0, 1.0\)"):
        validate(config)
    config = base_config()
    config.train.num_steps, config.train.num_epochs = 0, 0
    with pytest.raises(
        UserError, match="train.num_steps .0. and train.num_epochs .0. give a run of no steps"
    ):
        validate(config)


@pytest.mark.parametrize(
    "name, meant",
    [
        ("sample.num_steps", "sample.steps"),  # had said train.num_steps: another section's count
        ("diffusion.num_steps", "diffusion.steps"),
        ("train.steps", "train.num_steps"),
        ("train.lr", "optim.lr"),  # another section, the same last part
        ("optm.lr", "optim.lr"),
        ("optim.LR", "optim.lr"),
        ("model.layers", "model.num_layers"),
        ("train.batchsize", "train.batch_size"),
        ("sample.n_samples", "sample.num_samples"),
        ("sample.num_step", "sample.steps"),  # had said sample.num_samples, a closer spelling
        # a field of that very name elsewhere beats a near spelling in the section (it had said
        # train.num_steps, train.sample_every and optim.warmup_steps: other settings, which run)
        ("train.warmup_steps", "optim.warmup_steps"),
        ("train.ema_every", "optim.ema_every"),
        ("optim.num_steps", "train.num_steps"),
    ],
)
def test_the_field_meant_is_looked_for_in_its_own_section_first(name, meant):
    from motion_ddpm_jax.config import field_meant, flatten

    assert field_meant(name, flatten(base_config())) == meant


@pytest.mark.parametrize("field", ["seed", "sample.seed"])
def test_a_seed_jax_would_cut_to_32_bits_is_refused(field):
    """jax.random.key takes the low 32 bits of a seed while 64-bit numbers are off (JAX's default):
    training with seed 2**32 drew seed 0's initial parameters and noise, silently."""
    import jax

    section, _, name = field.rpartition(".")
    node = base_config()
    config = node
    node = node[section] if section else node
    node[name] = 2**32 - 1
    validate(config)
    node[name] = 2**32
    # The aliasing the bound prevents, as JAX has it here (an x64 JAX would tell them apart).
    if not jax.config.jax_enable_x64:
        same = jax.random.key_data(jax.random.key(2**32)) == jax.random.key_data(jax.random.key(0))
        assert bool(same.all())
    with pytest.raises(UserError, match=rf"{field} is 4294967296; expected an integer in \[0, 4294967296\)"):
        validate(config)
    if field == "seed":  # a run an earlier version let train with it resumes
        validate(config, config.to_dict())
    else:  # the refusal of a resume says how to go on: sample.* may change on a resume
        with pytest.raises(UserError, match=r"record holds it; resume with --config.sample.seed=<a value"):
            validate(config, config.to_dict())


def test_a_schedule_the_step_count_cannot_support_is_refused():
    config = base_config()
    config.diffusion.steps = 20
    with pytest.raises(UserError, match="diffusion.steps: The 'linear' schedule with num_steps=20"):
        validate(config)
    # With progress samples on, the schedule is named first: "set sample.steps to at most 10" had come
    # first, and the config so fixed was refused for the schedule next.
    config.diffusion.steps, config.train.sample_every = 10, 100
    with pytest.raises(UserError, match="diffusion.steps: The 'linear' schedule with num_steps=10"):
        validate(config)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("optim.b1", 1.0, r"optim.b1 is 1.0; expected a number in \[0.0, 1.0\)"),
        ("optim.b2", 1.0, r"optim.b2 is 1.0; expected a number in \[0.0, 1.0\)"),
        ("optim.b1", -0.5, r"optim.b1 is -0.5"),
        ("optim.eps", 0.0, r"optim.eps is 0.0; expected a number > 0.0"),
        ("optim.lr", float("inf"), r"optim.lr is inf; expected a finite number"),
        ("loss.velocity_weight", float("nan"), r"loss.velocity_weight is nan; expected a finite number"),
        ("optim.min_lr", -1.0, r"optim.min_lr is -1.0; expected a number >= 0.0"),
        ("model.dropout", 1.5, r"model.dropout is 1.5; expected a number in \[0.0, 1.0\)"),
        ("data.split_seed", -3, r"data.split_seed is -3"),
        ("eval.autoencoder_latent", 0, r"eval.autoencoder_latent is 0; expected an integer >= 1"),
        ("sample.steps", 0, r"sample.steps is 0; expected an integer >= 1"),  # (had said "a number")
    ],
)
def test_values_that_would_train_nan_or_upside_down_are_refused(field, value, expected):
    """Adam's b1 or b2 = 1 (or eps = 0) fills the parameters with NaN at the first update from finite
    gradients; an infinite lr does too; a negative min_lr climbs the loss at the end of the cosine."""
    config = base_config()
    set_field(config, field, value)
    with pytest.raises(UserError, match=expected):
        validate(config)


def test_a_field_misspelt_in_a_config_file_is_refused_with_the_name_meant():
    """A config file's assignment to a field base_config lacks adds it silently (ml_collections allows it):
    the run would train with the default of the field meant."""
    config = base_config()
    config.loss.velocity_wieght = 1.0
    with pytest.raises(UserError, match=r"loss.velocity_wieght \(did you mean loss.velocity_weight\?\)"):
        validate(config)


def test_the_textgrid_fields_reach_prepare_and_default_to_blank_labels_only_and_the_words_tier():
    """data.pause_labels and data.textgrid_tier feed PrepareOptions; unset (or missing from a run saved
    before they existed) they are "", which prepares as before."""
    from motion_ddpm_jax.data import beat

    config = base_config()
    assert beat.options_from_config(config.data) == beat.PrepareOptions()
    assert (beat.PrepareOptions().pause_labels, beat.PrepareOptions().textgrid_tier) == ("", "")
    config.data.pause_labels, config.data.textgrid_tier = "sil,sp", "ORT-MAU"
    validate(config)
    options = beat.options_from_config(config.data)
    assert (options.pause_labels, options.textgrid_tier) == ("sil,sp", "ORT-MAU")
    assert options.pause_label_set() == {"sil", "sp"}
    saved = base_config().to_dict()
    del saved["data"]["pause_labels"], saved["data"]["textgrid_tier"]
    assert beat.options_from_config(with_defaults(saved)["data"]) == beat.PrepareOptions()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train.max_consecutive_nonfinite", 0),
        ("optim.warmup_start_factor", -2.0),
        ("optim.warmup_start_factor", 1.5),
        ("data.std_floor", -1.0),
        ("diffusion.clip_x0", -1.0),
        ("sample.checkpoint_step", -5),
        ("train.save_every_epochs", -1),
        ("model.input_feats", -3),
        ("model.text_vocab_size", -1),
        ("distributed.initialization_timeout_s", -5),
        ("eval.num_clips", -1),
        ("eval.autoencoder_steps", 0),
        ("data.val_fraction", 1.5),
        ("data.test_fraction", -0.1),
    ],
)
def test_values_that_would_break_a_run_later_are_refused_at_once(field, value):
    """A user's journey: each was printed by --mode config without complaint and then broke the run
    (training stopped at its first log, a negative learning rate, a std floor below real stds) or was
    read as something else (a negative clip as none, -5 as the latest checkpoint)."""
    config = base_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(
        UserError, match=rf"config field {re.escape(field)} is {re.escape(repr(value))}; expected"
    ):
        validate(config)
    config[section][name] = base_config()[section][name]
    validate(config)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # MotionDiffuse's text2motion/datasets/dataset.py and tools/train.py: HumanML3D at 20 fps with
        # clips of 40 <= T < 200, KIT-ML at 12.5 fps with 24 <= T < 200, both in windows of 196 frames
        (
            "humanml3d",
            {"fps": 20.0, "min_motion_length": 40, "max_clip_length": 200, "max_motion_length": 196},
        ),
        ("kit", {"fps": 12.5, "min_motion_length": 24, "max_clip_length": 200, "max_motion_length": 196}),
    ],
)
def test_the_motiondiffuse_layout_configs_read_their_data_as_motiondiffuse_does(name, expected):
    config = load(ROOT / "configs" / f"{name}.py")
    assert config.data.representation == "humanml3d" and config.data.source == "prepared"
    assert {field: config.data[field] for field in expected} == expected
    assert not config.loss.use_geometric_loss  # no skeleton offsets come with the layout


@pytest.mark.parametrize("name", ["humanml3d", "kit", "beat", "beat_rot"])
def test_a_layout_config_at_small_size_is_the_demos_model_on_that_data(name):
    """`--config configs/<name>.py:small`: the data.* and loss.* of the file, the model, diffusion,
    optimizer and training of configs/demo.py (which trains on 2 CPU cores in minutes), x0 prediction
    (epsilon prediction with a 128-wide latent diverged on a researcher's 263-feature data); valid."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full, small = module.get_config(), module.get_config("small")
    demo = load(ROOT / "configs" / "demo.py")
    validate(small)
    assert small.data.to_dict() == full.data.to_dict() and small.loss.to_dict() == full.loss.to_dict()
    for section in ("diffusion", "optim", "train"):
        assert small[section].to_dict() == demo[section].to_dict(), section
    assert {**small.model.to_dict(), "text_max_length": 0} == {**demo.model.to_dict(), "text_max_length": 0}
    assert small.model.text_max_length == full.model.text_max_length  # captions longer than the demo's
    assert small.diffusion.prediction == "x0" and small.model.latent_dim == 128
    assert full.model.latent_dim == 512 and full.diffusion.prediction == "epsilon"  # MotionDiffuse's
    with pytest.raises(
        ValueError,
        match=rf"configs/{name}.py takes ':small' \(the demo's small model\) or nothing, not ':big'",
    ):
        module.get_config("big")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("train.batch_size", None, "an integer"),  # had passed: every bound skips None
        ("model.input_feats", None, "an integer"),  # (its "taken from the data" is 0)
        ("optim.lr", None, "a number"),
        ("train.num_steps", None, "an integer"),  # had raised a bare TypeError from num_steps > 0
        ("model.latent_dim", None, "an integer"),  # and from the heads' divisibility
        ("train.batch_size", True, "an integer"),  # a bool is an int to Python: a batch of 1
        ("optim.lr", "1e-4", "a number"),  # a TypeError from its bound
        ("loss.use_velocity_loss", "false", "true or false"),  # a non-empty string is true
        ("data.root", 3, "a string"),
    ],
)
def test_a_field_holding_another_type_is_refused_naming_it(field, value, expected):
    """A config file's `config.train.batch_size = None` (None for "unset", as argparse defaults have it)
    or `= True`, or a run record's (JSON) value of another type: ml_collections lets None and a bool into
    an int field, and a run record's dict becomes a ConfigDict of whatever types it holds. Each had passed
    validation (or raised TypeError from inside it) and failed or trained otherwise later."""
    import ml_collections

    saved = base_config().to_dict()
    section, name = field.split(".")
    saved[section][name] = value
    with pytest.raises(
        UserError, match=rf"config field {re.escape(field)} is {re.escape(repr(value))}; expected {expected}$"
    ):
        validate(ml_collections.ConfigDict(saved))
    fine = base_config().to_dict()
    fine["data"]["fps"], fine["optim"]["min_lr"] = 30, 0  # JSON's integers in float fields are numbers
    validate(ml_collections.ConfigDict(fine))


def test_a_resumed_run_keeps_a_value_of_another_type_it_trained_with():
    """Earlier versions let a config file's None ("unset") into data.max_clip_length, read as 0; a resume
    may change no data.* field but the paths (train.check_resumable), so refusing the value the run trained
    with had left such a run with no way on (`--config.data.max_clip_length=0` was then refused as another
    experiment). A new run, or a resume asking for a value the run did not train with, is refused still."""
    import ml_collections

    saved = base_config().to_dict()
    saved["data"]["max_clip_length"] = None
    config = ml_collections.ConfigDict(saved)
    refused = r"config field data.max_clip_length is None; expected an integer$"
    with pytest.raises(UserError, match=refused):
        validate(config)  # a new run
    validate(config, trained=saved)
    del saved["data"]["up_axis"]  # a run from before data.up_axis: its default
    validate(config, trained=saved)
    with pytest.raises(UserError, match=refused):
        validate(config, trained=base_config().to_dict())  # that run trained with 0, not None
    ints = base_config().to_dict()
    ints["train"]["batch_size"] = True  # equal to the 1 a run trained with, but not that value
    trained = base_config().to_dict()
    trained["train"]["batch_size"] = 1
    with pytest.raises(UserError, match=r"train.batch_size is True; expected an integer$"):
        validate(ml_collections.ConfigDict(ints), trained=trained)


def test_a_min_lr_above_the_lr_is_a_schedule_problem():
    """`--config.optim.lr=1e-7` (a fine-tuning rate) left the default min_lr 1e-6 above it: the schedule
    (warmup to lr, then lr + (min_lr - lr)(1 - cos(pi p))/2) climbed to 10x the lr asked for."""
    config = base_config()
    config.optim.lr = 1e-7
    what, fix = schedule_problem(config)
    assert what == (
        "config field optim.min_lr is 1e-06, above optim.lr (1e-07): the cosine would climb from lr to min_lr"
    )
    assert fix == "set --config.optim.min_lr to at most optim.lr"
    config.optim.min_lr = 1e-7  # a constant rate after the warmup
    assert schedule_problem(config) is None
    config.optim.lr = config.optim.min_lr = 0.0  # no step at all: allowed
    assert schedule_problem(config) is None


def test_a_warmup_not_shorter_than_the_run_is_a_schedule_problem():
    """train.learning_rate_schedule cuts a warmup of the run's length less one or more to num_steps - 1
    steps: the rate climbs to optim.lr at the last step and the cosine to min_lr never runs (499, 500 and
    5000 steps of warmup gave one schedule in a 500-step run)."""
    config = base_config()
    for warmup in (499, 500, 5000):
        config.train.num_steps, config.optim.warmup_steps = 500, warmup
        what, fix = schedule_problem(config)
        assert what.startswith(
            f"config field optim.warmup_steps is {warmup}, not shorter than train.num_steps (500) less one"
        )
        assert fix.startswith("set --config.optim.warmup_steps below 499")
    config.optim.warmup_steps = 498
    assert schedule_problem(config) is None
    config.train.num_steps, config.optim.warmup_steps = 0, 5000  # counted in epochs: the data sets its length
    assert schedule_problem(config) is None


def test_listed_names_the_first_few_and_counts_the_rest_with_either_separator():
    """One spelling of "the first few, and how many more" (generate's and the progress note's caption
    lists and the implausible-samples warning had each spelled the '; ' form themselves)."""
    names = ["a", "b", "c", "d", "e"]
    assert listed(names, 3) == "a, b, c and 2 more"
    assert listed(names, 3, "; ") == "a; b; c; and 2 more"
    assert listed(names[:3], 3, "; ") == listed(names[:3], 5, "; ") == "a; b; c"
    assert listed(names, 4, "; ") == "a; b; c; d; and 1 more" and listed([], 3, "; ") == ""
