"""The family, its exact counter and the search space."""

import json
import re

import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from resnet_space import (MODEL_1, TABLE_1, Budget, Counts, ResNetSpec, Shape, SpecError, baseline_spec, count, fits,
                          parse_budget, walls_hit)
from resnet_space.model import build_model
from resnet_space.space import SpaceError, StudyFile, fit_depth
from resnet_space.spec import max_stages

from .conftest import REPO, assert_user_error, run_cli

KERNELS = st.sampled_from([1, 3, 5, 7])


@st.composite
def specs(draw):
    side = draw(st.sampled_from([16, 17, 28, 32, 33, 64, 128]))  # odd sides round up when halved
    n = draw(st.integers(1, max_stages(side)))
    per_stage = lambda s: st.lists(s, min_size=n, max_size=n).map(tuple)  # noqa: E731
    return ResNetSpec(
        blocks=draw(per_stage(st.integers(1, 3))),
        channels=draw(per_stage(st.integers(1, 24))),
        conv_kernels=draw(per_stage(KERNELS)),
        skip_kernels=draw(per_stage(KERNELS)),
        pool=draw(st.integers(1, 40)),
        classes=draw(st.integers(2, 12)),
        image_side=side,
        in_channels=draw(st.sampled_from([1, 3])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_analytic_counts_equal_torch(spec):
    model = build_model(spec)
    counts = count(spec)
    assert counts.params == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        out = model.eval()(torch.zeros(1, spec.in_channels, spec.image_side, spec.image_side))
    assert out.shape == (1, spec.classes)
    assert model.stem[0][0].in_channels == spec.in_channels  # a grayscale stem takes one channel, not three
    assert counts.macs * 2 == flops.get_total_flops()


@settings(max_examples=200)
@given(specs())
def test_spec_json_round_trip(spec):
    assert ResNetSpec.from_json(spec.to_json()) == spec
    assert spec.summary().startswith(f"N{spec.stages} B")


@pytest.mark.parametrize(
    "spec, params, macs",
    [
        (MODEL_1, 4_976_426, 384_666_112),
        (ResNetSpec((1, 1, 5, 3), (32, 64, 128, 256), 3, 1, 4), 4_772_010, None),
        (ResNetSpec((1, 1, 1, 1, 1), (32, 64, 128, 256, 512), 3, 1, 4), 4_904_618, None),
        (ResNetSpec((1, 1, 1, 1), (64, 128, 256, 512), 3, 1, 4), 4_903_242, None),
        # The report's text says 3x3 skips for Model 1; that would be over budget (NOTES.md).
        (ResNetSpec((8, 6, 4, 3), (32, 64, 128, 256), 3, 3, 4), 5_320_490, None),
    ],
)
def test_table_1_counts(spec, params, macs):
    assert count(spec).params == params
    if macs is not None:
        assert count(spec).macs == macs


def test_table_1_reported_params_match_recovered_specs():
    for name, _, _, reported, spec in TABLE_1:
        if spec is not None:
            assert abs(count(spec).params - reported) < 1000, name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(blocks=(0, 1), channels=(8, 8), conv_kernels=3, skip_kernels=1), "at least 1"),
        (dict(blocks=(1, 1), channels=(8,), conv_kernels=3, skip_kernels=1), "1 values given for 2 stages"),
        (dict(blocks=(1,), channels=(8,), conv_kernels=4, skip_kernels=1), "odd"),
        (dict(blocks=(1,), channels=(8,), conv_kernels=3, skip_kernels=1, pool=0), "pool"),
        (dict(blocks=(1,) * 7, channels=(8,) * 7, conv_kernels=3, skip_kernels=1), "at most 6"),
    ],
)
def test_invalid_specs(kwargs, message):
    with pytest.raises(SpecError, match=message):
        ResNetSpec(**kwargs)


@pytest.mark.parametrize("text, value", [
    ("5e6", 5_000_000), ("5000000", 5_000_000), ("5_000_000", 5_000_000), ("5M", 5_000_000),
    ("2.5m", 2_500_000), ("200k", 200_000), ("500k", 500_000), ("4.1M", 4_100_000), ("2.01M", 2_010_000),
    ("4.1e6", 4_100_000), ("1.000001M", 1_000_001), (" 5M ", 5_000_000), ("1", 1), ("1e15", 10**15),
    # TOML hands integers and floats over as such; a float's exact text is what is read.
    (5_000_000, 5_000_000), (4.1e6, 4_100_000), (2.01e6, 2_010_000),
])
def test_budget_forms(text, value):
    budget = parse_budget(text)
    assert budget == value and type(budget) is int


@pytest.mark.parametrize("text, message", [
    ("0.5", "at least 1"), ("1.5", "not a whole number"), ("0", "at least 1"), ("-5e6", "at least 1"),
    ("-0", "at least 1"), ("1.0000001M", "not a whole number"), ("2.5", "not a whole number"),
    ("nan", "not a number"), ("inf", "not a number"), ("-inf", "not a number"), ("five", "not a number"),
    ("", "not a number"), ("5MM", "not a number"), ("1e400", "largest budget"),
    ("1e999999999", "largest budget"), ("1e-999999999", "at least 1"), (True, "not a number"), (None, "not a number"),
    (1.5, "not a whole number"), (float("nan"), "not a number"),
])
def test_bad_budgets(text, message):
    with pytest.raises(SpecError, match=message) as error:
        parse_budget(text)
    assert "\n" not in str(error.value)


def test_fits_is_strictly_under_for_specs_and_counts():
    counts = count(MODEL_1)
    for budget, fit in [(counts.params + 1, True), (counts.params, False), (counts.params - 1, False)]:
        assert fits(MODEL_1, budget) is fit
        assert fits(counts, budget) is fit
        assert fits(counts, Budget(budget)) is fit
    with pytest.raises(TypeError):
        fits(counts.params, 5)  # a bare number could be either count
    with pytest.raises(TypeError):
        fits(True, 5)


def test_either_wall_rejects_and_says_which():
    params, macs = count(MODEL_1)
    assert macs == 384_666_112
    assert walls_hit(MODEL_1, Budget(params + 1, macs + 1)) == ()
    assert walls_hit(MODEL_1, Budget(params + 1, macs)) == ("macs",)
    assert walls_hit(MODEL_1, Budget(params, macs + 1)) == ("params",)
    assert walls_hit(MODEL_1, Budget(params, macs - 1)) == ("params", "macs")
    assert walls_hit(Counts(10, 10**12), Budget(11)) == ()  # no MACs wall: any MACs fit
    assert not fits(MODEL_1, Budget(5_000_000, 300_000_000)) and fits(MODEL_1, Budget(5_000_000, 400_000_000))


def test_a_budget_scaled_by_fill_is_the_inclusive_fill_under_the_strict_wall():
    assert Budget(1_000, 100).scaled(0.9) == Budget(901, 91)  # counts <= 900 and <= 90
    assert Budget(1_000, 100).scaled(1.0) == Budget(1_000, 100)  # never past the wall itself
    assert Budget(1_000).scaled(0.5) == Budget(501, None)


@pytest.mark.parametrize("text, message", [
    ("0", "MACs budget: '0' must be a positive number of MACs (at least 1)"),
    ("lots", "MACs budget: 'lots' is not a number"), ("1.5", "not a whole number of MACs"),
    ("1e16", "over the largest budget accepted (1e15 MACs)"),
])
def test_bad_macs_budgets_name_their_unit(text, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_budget(text, "MACs")
    assert parse_budget("500M", "MACs") == 500_000_000


def test_paper_space_reproduces_every_table_1_architecture():
    space = StudyFile.load(REPO / "studies" / "paper.toml")
    for name, _, _, _, spec in TABLE_1:
        if spec is None:
            continue
        params = {"stages": spec.stages, "first_channels": spec.channels[0], "pool": spec.pool, "growth": 2.0}
        for i in range(spec.stages):
            params.update({f"blocks_{i + 1}": spec.blocks[i], f"conv_kernel_{i + 1}": spec.conv_kernels[i]})
            if i:
                params[f"skip_kernel_{i + 1}"] = spec.skip_kernels[i]
        assert space.sample_spec(optuna.trial.FixedTrial(params), space.budget) == spec, name


def feasible_fraction(name: str, draws: int = 300, budget: Budget | int | None = None) -> float:
    space = StudyFile.load(REPO / "studies" / name)
    budget = budget or space.budget
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    feasible = 0
    for _ in range(draws):
        trial = study.ask()
        spec = space.sample_spec(trial, budget)
        space.sample_recipe(trial)
        feasible += fits(spec, budget)
        study.tell(trial, 0.0)
    return feasible / draws


def test_choosing_width_last_keeps_samples_feasible():
    # The default space repairs depth no width can save; the paper's space, with its fixed
    # widths, is mostly over budget (7%).
    default, paper = feasible_fraction("default.toml"), feasible_fraction("paper.toml")
    assert default > 0.95
    assert 0 < paper < default / 4


def torch_params(spec) -> int:
    return sum(p.numel() for p in build_model(spec).parameters())


@pytest.mark.parametrize("budget", [50_000, 200_000, 1_000_000, 5_000_000, 20_000_000, Budget(5_000_000, 300_000_000),
                                    Budget(1_000_000, 50_000_000), Budget(200_000, 10_000_000)])
def test_default_space_is_feasible_at_any_budget(budget):
    # benchmarks/space_feasibility.py measures 1,000 draws per budget; 0 rejected at each.
    assert feasible_fraction("default.toml", draws=200, budget=budget) >= 0.95


DEFAULT = StudyFile.load(REPO / "studies" / "default.toml")


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31), params=st.integers(10_000, 50_000_000),
       macs=st.none() | st.integers(1_000_000, 2_000_000_000))
def test_every_proposal_fits_both_walls_unless_nothing_of_its_draw_could(seed, params, macs):
    """A proposal is at or over a wall only when the space's least network at the drawn growth and
    pool (3 stages of one 3x3 block from 8 channels) is over it too: nothing the repair may reach
    fits. One that fits stays within fill of every wall, unless it is at the narrowest width."""
    budget = Budget(params, macs)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    spec = DEFAULT.sample_spec(trial, budget)
    growth = trial.params["growth"]
    widths = (8, *(max(8, round(8 * growth**i / 8) * 8) for i in (1, 2)))
    least = ResNetSpec((1, 1, 1), widths, 3, 1, trial.params["pool"])
    assert fits(spec, budget) or not fits(least, budget)
    if fits(spec, budget) and spec.channels[0] > 8:
        assert fits(spec, budget.scaled(trial.params["fill"]))


DEEP = {"stages": 5, "pool": 1, "growth": 2.0, "fill": 1.0,
        **{f"blocks_{i}": 6 for i in range(1, 6)}, **{f"conv_kernel_{i}": 5 for i in range(1, 6)},
        **{f"skip_kernel_{i}": 3 for i in range(2, 6)}}


def test_repair_is_a_fixed_function_of_the_drawn_values():
    space = StudyFile.load(REPO / "studies" / "default.toml")
    repaired = []
    spec = space.sample_spec(optuna.trial.FixedTrial(DEEP), budget=200_000, on_repair=repaired.append)
    assert fits(spec, 200_000)
    # Stage 5 alone is over 200,000 at 8-16-32-64-128 channels, so 4 stages are kept; then the
    # kernels give way to 3x3 and 1x1 (the blocks still do not fit), then the blocks, as one profile.
    assert spec == ResNetSpec((2, 2, 2, 2), (8, 16, 32, 64), 3, 1, 1)
    assert repaired == ["N5 B6-6-6-6-6 C8-16-32-64-128 F5 k1-3-3-3-3 P1"]
    assert space.sample_spec(optuna.trial.FixedTrial(DEEP), budget=200_000) == spec
    # Unrepaired, this draw is far over the budget even at the narrowest width.
    assert count(ResNetSpec((6,) * 5, (8, 16, 32, 64, 128), 5, (1, 3, 3, 3, 3), 1)).params > 200_000


def test_repair_of_an_enormous_draw_ends(tmp_path):
    """blocks = {high = 10**18}: the repair bisects its block scale; stepping it down one at a
    time would never end."""
    path = tmp_path / "huge.toml"
    path.write_text("[space]\nstages = [3]\nblocks = {low = 1, high = 1000000000000000000}\n")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    assert fits(StudyFile.load(path).sample_spec(trial, 5_000_000), 5_000_000)


def test_repair_keeps_stages_then_blocks_then_kernels():
    narrowest = lambda b, f, k: ResNetSpec(b, (8, 16, 32, 64, 128)[:len(b)], f, k, 4)  # noqa: E731
    least = {"stages": 3, "blocks": 1, "conv_kernel": 3, "skip_kernel": 1}
    blocks, conv, skip = (6, 3, 6, 2, 1), (5, 5, 5, 5, 5), (1, 3, 3, 3, 3)
    assert count(narrowest(blocks, conv, skip)).params == 1_423_698
    # What fits comes back unchanged.
    assert fit_depth(narrowest, blocks, conv, skip, least, 1_423_699) == (blocks, conv, skip)
    # Just under: the last stage's kernels give way first, and that is enough.
    assert fit_depth(narrowest, blocks, conv, skip, least, 1_000_000) == (blocks, (5, 5, 5, 5, 3), (1, 3, 3, 3, 1))
    # Five stages of one 3x3 block count 308,786: with room for them, all five stay, at 3x3,
    # with the blocks scaled as one profile (6, 3, 6, 2, 1) * 3/6, rounded up.
    assert fit_depth(narrowest, blocks, conv, skip, least, 400_000) == ((3, 2, 3, 1, 1), (3,) * 5, (1,) * 5)
    # Below that, the fifth stage goes (four count 78,002 at their least).
    assert fit_depth(narrowest, blocks, conv, skip, least, 250_000) == ((5, 3, 5, 2), (3,) * 4, (1,) * 4)
    assert fit_depth(narrowest, blocks, conv, skip, least, 60_000) == ((2, 1, 2), (3,) * 3, (1,) * 3)
    # Never below the space's least stages: under the smallest network (20,914), nothing changes.
    assert fit_depth(narrowest, blocks, conv, skip, least, 20_914) == (blocks, conv, skip)
    for budget in (20_915, 60_000, 250_000, 400_000, 1_000_000):
        assert fits(narrowest(*fit_depth(narrowest, blocks, conv, skip, least, budget)), budget)
    # A space offering 3 or 5 stages: where five do not fit, three (not four) are kept.
    three_or_five = {**least, "stage_counts": [3, 5]}
    repaired = fit_depth(narrowest, blocks, conv, skip, three_or_five, 250_000)
    assert len(repaired[0]) == 3 and fits(narrowest(*repaired), 250_000)
    assert fit_depth(narrowest, blocks, conv, skip, three_or_five, 400_000)[0] == (3, 2, 3, 1, 1)


def test_no_network_of_the_space_fits_a_tiny_budget():
    # The default space's smallest network (N3 B1-1-1 C8-16-16 F3 k1 P4) has 10,706 params.
    assert feasible_fraction("default.toml", draws=50, budget=10_706) == 0


@pytest.mark.parametrize("budget, expected, params", [
    (5_000_000, MODEL_1, 4_976_426),
    (20_000_000, MODEL_1, 4_976_426),
    (4_976_426, ResNetSpec((8, 6, 4, 3), (31, 62, 124, 248), 3, 1, 4), 4_670_625),  # at Model 1's count: over
    (1_000_000, ResNetSpec((8, 6, 4, 3), (14, 28, 56, 112), 3, 1, 4), 955_496),
    (100_000, ResNetSpec((8, 6, 4, 3), (4, 8, 16, 32), 3, 1, 4), 79_086),
    (3_000, None, None),
    # Under a MACs wall too: Model 1 (384,666,112 MACs) is over 300M, its shape at C_1 = 28 is not.
    (Budget(5_000_000, 300_000_000), ResNetSpec((8, 6, 4, 3), (28, 56, 112, 224), 3, 1, 4), 3_811_398),
    (Budget(5_000_000, 400_000_000), MODEL_1, 4_976_426),
    (Budget(1_000_000, 50_000_000), ResNetSpec((8, 6, 4, 3), (11, 22, 44, 88), 3, 1, 4), 590_765),
    (Budget(200_000, 10_000_000), ResNetSpec((8, 6, 4, 3), (5, 10, 20, 40), 3, 1, 4), 123_095),
    (Budget(200_000, 100_000), None, None),  # not even C_1 = 1 fits 100,000 MACs
])
def test_baseline_spec(budget, expected, params):
    spec = baseline_spec(budget)
    assert spec == expected
    if spec is not None:
        assert count(spec).params == params and fits(spec, budget)
        c = spec.channels[0]
        if spec != MODEL_1:  # the widest: one channel more is over
            assert not fits(ResNetSpec(spec.blocks, (c + 1, 2 * c + 2, 4 * c + 4, 8 * c + 8), 3, 1, 4), budget)


def test_fill_chooses_widest_fitting_width():
    space = StudyFile.load(REPO / "studies" / "default.toml")
    base = {"stages": 3, "blocks_1": 2, "blocks_2": 2, "blocks_3": 2, "conv_kernel_1": 3, "conv_kernel_2": 3,
            "conv_kernel_3": 3, "skip_kernel_2": 1, "skip_kernel_3": 1, "pool": 4, "growth": 2.0}
    spec = space.sample_spec(optuna.trial.FixedTrial({**base, "fill": 1.0}), budget=1_000_000)
    # Judged by the built networks' own parameters, not by the counter the rule itself uses.
    assert torch_params(spec) < 1_000_000
    c1 = spec.channels[0] + 1  # C_1 goes to the channel, the wider stages to multiples of channel_step (8)
    wider = ResNetSpec(spec.blocks, (c1, *(max(8, round(c1 * 2**i / 8) * 8) for i in (1, 2))), 3, 1, 4)
    assert torch_params(wider) >= 1_000_000
    lower = space.sample_spec(optuna.trial.FixedTrial({**base, "fill": 0.9}), budget=1_000_000)
    assert torch_params(lower) <= 900_000 and torch_params(lower) <= torch_params(spec)


MINIMAL = "[space]\nstages = [3]\nblocks = 1\n"

BAD_STUDY_FILES = {
    # file text after MINIMAL's [space] or in place of it: one kind of mistake each
    "not-toml": ("[space\n", "not valid TOML"),
    "no-blocks": ("[space]\nstages = [3]\n", "needs stages and blocks"),
    "unknown-top-level-key": ("seed = 1\n" + MINIMAL, "unknown top-level keys seed"),
    "description-not-string": ("description = 5\n" + MINIMAL, "description = 5 must be a string"),
    "space-not-table": ("space = 3\n", "space = 3 must be a table"),
    "unknown-space-key": (MINIMAL + "width = 3\n", "[space] unknown keys width"),
    "too-many-stages": ("[space]\nstages = [3, 9]\nblocks = 1\n", "[space] stages: 9 is too many"),
    "range-end-too-many-stages": ("[space]\nstages = {low = 3, high = 9}\nblocks = 1\n",
                                  "[space] stages: 9 is too many"),
    "middle-space-choice": (MINIMAL + "conv_kernel = [3, 4, 5]\n", "[space] conv_kernel: kernel 4 must be odd"),
    "kernel-range": (MINIMAL + "conv_kernel = {low = 3, high = 5}\n", "[space] conv_kernel: the range"),
    "low-above-high": ("[space]\nstages = [3]\nblocks = {low = 6, high = 1}\n",
                       "[space] blocks: low 6 is above high 1"),
    "range-missing-high": ("[space]\nstages = [3]\nblocks = {low = 1}\n", "[space] blocks: the range"),
    "unknown-range-key": ("[space]\nstages = [3]\nblocks = {low = 1, high = 3, step = 1}\n",
                          "[space] blocks: unknown keys step"),
    "choices-beside-range": ("[space]\nstages = {choices = [3], low = 1}\nblocks = 1\n",
                             "[space] stages: {'choices': [3], 'low': 1} mixes choices"),
    "empty-choices": ("[space]\nstages = []\nblocks = 1\n", "[space] stages: an empty list"),
    "float-for-int": ("[space]\nstages = [3]\nblocks = 2.5\n", "[space] blocks: 2.5 is not an integer"),
    "float-range-for-int": ("[space]\nstages = [3]\nblocks = {low = 1.0, high = 3}\n",
                            "[space] blocks: 1.0 is not an integer"),
    "bool-for-int": (MINIMAL + "pool = true\n", "[space] pool: True is not an integer"),
    "zero-for-positive": (MINIMAL + "first_channels = [32, 0]\n", "[space] first_channels: 0 must be at least 1"),
    "string-range-end": (MINIMAL + "fill = {low = 'a', high = 1.0}\n", "[space] fill: range end 'a' is not"),
    "fill-above-one": (MINIMAL + "fill = [0.5, 1.5]\n", "[space] fill: 1.5 must be a fraction"),
    "growth-below-one": (MINIMAL + "growth = {low = 0.5, high = 2.0}\n",
                         "[space] growth: 0.5 must be between 1 and 16"),
    "growth-overflows": (MINIMAL + "growth = [2.0, 1e308]\n", "[space] growth: 1e+308 must be between 1 and 16"),
    "crop-past-the-image": (MINIMAL + "[recipe]\ncrop_padding = 1000000\n",
                            "[recipe] crop_padding must be in [0, 32], not 1000000"),
    "growth-nan": (MINIMAL + "growth = nan\n", "[space] growth: nan is not a finite number"),
    "searched-fixed-key": (MINIMAL + "channel_step = [4, 8]\n", "[space] channel_step: [4, 8] must be one fixed"),
    "one-class": (MINIMAL + "classes = 1\n", "[space] classes: 1 must be at least 2"),
    "unknown-recipe-key": (MINIMAL + "[recipe]\nlearning_rate = 0.1\n", "[recipe] unknown keys learning_rate"),
    "bad-recipe-value": (MINIMAL + "[recipe]\noptimizer = 'rmsprop'\n",
                         "[recipe] optimizer must be one of sgd, adam, not 'rmsprop'"),
    "middle-recipe-choice": (MINIMAL + "[recipe]\noptimizer = ['sgd', 'rmsprop', 'adam']\n",
                             "[recipe] optimizer must be one of sgd, adam, not 'rmsprop'"),
    "middle-of-choices-table": (MINIMAL + "[recipe]\ngrayscale = {choices = [0.0, 2.0, 0.1]}\n",
                                "[recipe] grayscale is a probability in [0, 1], not 2.0"),
    "recipe-range-low-end": (MINIMAL + "[recipe]\nweight_decay = {low = -1e-4, high = 1e-3}\n",
                             "[recipe] weight_decay must be in [0, 1], not -0.0001"),
    "recipe-range-high-end": (MINIMAL + "[recipe]\nwarmup = {low = 0.1, high = 1.0}\n",
                              "[recipe] warmup must be in [0, 1), not 1.0"),
    "recipe-low-above-high": (MINIMAL + "[recipe]\nlr = {low = 0.4, high = 0.1, log = true}\n",
                              "[recipe] lr: low 0.4 is above high 0.1"),
    "log-range-from-zero": (MINIMAL + "[recipe]\nlr = {low = 0.0, high = 0.1, log = true}\n",
                            "[recipe] lr: a log range needs low > 0, not 0.0"),
    "log-not-bool": (MINIMAL + "[recipe]\nlr = {low = 0.1, high = 0.2, log = 'yes'}\n",
                     "[recipe] lr: log = 'yes' must be true or false"),
    "string-for-int": (MINIMAL + "[recipe]\nepochs = 'ten'\n", "[recipe] epochs must be an integer, not 'ten'"),
    "float-for-int-recipe": (MINIMAL + "[recipe]\nbatch_size = [64, 96.5]\n",
                             "[recipe] batch_size must be an integer, not 96.5"),
    "bool-for-int-recipe": (MINIMAL + "[recipe]\nepochs = true\n", "[recipe] epochs must be an integer, not True"),
    "int-for-bool": (MINIMAL + "[recipe]\nflip = 1\n", "[recipe] flip must be true or false, not 1"),
    "number-for-string": (MINIMAL + "[recipe]\nschedule = 1\n", "[recipe] schedule must be a string, not 1"),
    "infinite-float": (MINIMAL + "[recipe]\nlr = inf\n", "[recipe] lr must be a finite number, not inf"),
    "milestones-not-numbers": (MINIMAL + "[recipe]\nmilestones = ['half']\n",
                               "[recipe] milestones must be a list of numbers, not ('half',)"),
    "bad-budget": ("budget = 'lots'\n" + MINIMAL, "not a number"),
    "bad-macs-budget": ("macs_budget = 'lots'\n" + MINIMAL, "MACs budget: 'lots' is not a number"),
    "zero-macs-budget": ("macs_budget = 0\n" + MINIMAL, "MACs budget: 0 must be a positive number of MACs"),
    "fractional-macs-budget": ("macs_budget = 2.5\n" + MINIMAL, "MACs budget: 2.5 is not a whole number of MACs"),
}


def test_a_study_file_sets_a_macs_budget(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("budget = '1M'\nmacs_budget = '50M'\n" + MINIMAL)
    assert StudyFile.load(path).budget == Budget(1_000_000, 50_000_000)
    path.write_text(MINIMAL)
    assert StudyFile.load(path).budget == Budget(5_000_000)  # no macs_budget: no MACs wall


@pytest.mark.parametrize("text, message", BAD_STUDY_FILES.values(), ids=BAD_STUDY_FILES.keys())
def test_bad_study_files(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as error:
        StudyFile.load(path)
    line = str(error.value)
    assert message in line and line.startswith(f"study file {path}") and "\n" not in line, line


@pytest.mark.parametrize("name", ["cpu-small.toml", "default.toml", "paper.toml"])
def test_shipped_study_files_load(name):
    assert StudyFile.load(REPO / "studies" / name).space["stages"]


def test_every_form_of_a_dimension_draws_its_type(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(MINIMAL + "[recipe]\nepochs = {low = 10, high = 1000, log = true}\n"
                    "lr = {low = 0.01, high = 1.0, log = true}\nmilestones = {choices = [[0.5], [0.3, 0.6]]}\n"
                    "optimizer = {choices = ['adam', 'sgd']}\nnesterov = [true, false]\n")
    study = StudyFile.load(path)
    recipe, params = study.center_recipe()
    assert (recipe.epochs, recipe.lr, recipe.milestones, recipe.optimizer) == (100, pytest.approx(0.1), (0.5,), "adam")
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        recipe = study.sample_recipe(sampler.ask())
        assert isinstance(recipe.epochs, int) and 10 <= recipe.epochs <= 1000
        assert recipe.milestones in {(0.5,), (0.3, 0.6)} and isinstance(recipe.nesterov, bool)


def test_count_cli_text_and_json():
    result = run_cli("count", "--blocks", "8,6,4,3", "--channels", "32,64,128,256", "--conv-kernel", "3",
                     "--skip-kernel", "1", "--pool", "4", "--classes", "10")
    assert result.returncode == 0, result.stderr
    assert "4,976,426 params" in result.stdout and "384,666,112 MACs" in result.stdout
    result = run_cli("count", "--blocks", "1,1,1,1", "--channels", "64,128,256,512", "--json")
    data = json.loads(result.stdout)
    # MACs by hand: stem 1728 x 32^2, stage 1 73,728 x 32^2, each later stage 229,376 x 16^2
    # = 917,504 x 8^2 = 3,670,016 x 4^2, head 512 x 10.
    assert (data["params"], data["macs"]) == (4_903_242, 253_432_832)


def test_count_cli_per_stage_kernels_and_budget_exit_codes():
    args = ["count", "--blocks", "2,2", "--channels", "16,32", "--conv-kernel", "3,5", "--skip-kernel", "1,3"]
    data = json.loads(run_cli(*args, "--json").stdout)
    # By hand (weights + 2 BatchNorm tensors per conv): stem 432 + 32; stage 1, 3x3 at 16 wide,
    # 4 convs: 9,216 + 128; stage 2, 5x5 at 32 wide after a 3x3 16->32 shortcut: 94,208 + 320;
    # head over a 4x4 pool of the 16x16 map: 32 * 4 * 4 * 10 + 10. torch counts the same.
    # MACs: stem 432 x 32^2, stage 1 9,216 x 32^2, stage 2 94,208 x 16^2, head 5,120.
    params = 464 + 9_344 + 94_528 + 5_130
    assert params == 109_466 == torch_params(ResNetSpec((2, 2), (16, 32), (3, 5), (1, 3), 4))
    assert (data["params"], data["macs"]) == (params, 442_368 + 9_437_184 + 24_117_248 + 5_120)
    assert run_cli(*args, "--budget", str(params + 1)).returncode == 0
    assert run_cli(*args, "--budget", str(params)).returncode == 1  # at the budget is over it


def test_baseline_spec_with_another_head():
    # Model 1's head is 256 x 10 + 10 = 2,570 params; a 12-class head is 256 x 12 + 12 = 3,084.
    spec = baseline_spec(5_000_000, Shape(classes=12))
    assert spec == ResNetSpec((8, 6, 4, 3), (32, 64, 128, 256), 3, 1, 4, classes=12)
    assert count(spec).params == 4_976_426 + 514
    assert baseline_spec(4_976_427, Shape(classes=12)).channels[0] < 32  # Model 1 fits there, its 12-class twin does not


def test_seven_and_eight_stages_count_at_128_pixels():
    result = run_cli("count", "--blocks", "1,1,1,1,1,1,1,1", "--channels", "8,8,8,8,8,8,8,8", "--side", "128")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("N8 B1-1-1-1-1-1-1-1")
    line = assert_user_error(run_cli("count", "--blocks", "1,1,1,1,1,1,1,1", "--channels", "8,8,8,8,8,8,8,8", "--side",
                                     "64"))
    assert "8 stages would shrink the 64x64 input below 1x1 (at most 7)" in line
