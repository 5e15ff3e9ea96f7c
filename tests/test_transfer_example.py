"""examples/transfer.py end to end at tiny sizes: the summary schema, values in [0, 1], the table and the plot, the
same results with forked workers as in-process, and the message when the demo model is missing."""

import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from transformers_glip import GLIPForGrounding
from transformers_glip.image_processing_glip import GLIPImageProcessor
from transformers_glip.processing_glip import GLIPProcessor

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name: str):
    specification = importlib.util.spec_from_file_location(f"{name}_example", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


transfer = load_example("transfer")


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """An untrained model of the demo architecture (`tiny_config`) saved like `make demo` saves the demo."""
    pretrain = load_example("pretrain")
    directory = tmp_path_factory.mktemp("demo")
    max_length = 48  # the 12 novel category names take 38 tokens
    model = GLIPForGrounding(pretrain.tiny_config(max_length))
    model.save_pretrained(directory)
    image_processor = GLIPImageProcessor(min_size=96, max_size=128, train_min_sizes=[96])
    tokenizer = AutoTokenizer.from_pretrained(pretrain.DEFAULT_TOKENIZER)
    GLIPProcessor(image_processor, tokenizer, max_text_length=max_length).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def novel_dir(tmp_path_factory):
    """Where the tests generate the novel-task world (once: later runs reuse it)."""
    return str(tmp_path_factory.mktemp("novel") / "world")


def tiny_arguments(demo_model, novel_dir, output_dir, modes=transfer.MODES, workers=1) -> list[str]:
    return [
        "--model",
        demo_model,
        "--output_dir",
        str(output_dir),
        "--novel_dir",
        novel_dir,
        "--num_train",
        "16",
        "--num_validation",
        "3",
        "--shots",
        "1",
        "--seeds",
        "1",
        "2",
        "--modes",
        *modes,
        "--max_train_steps",
        "2",
        "--batch_size",
        "2",
        "--num_workers",
        str(workers),
    ]


def test_transfer_end_to_end(demo_model, novel_dir, tmp_path, capsys):
    output = tmp_path / "transfer"
    summary = transfer.main(tiny_arguments(demo_model, novel_dir, output))
    with open(output / "summary.json") as handle:
        written = json.load(handle)
    assert written == summary
    assert set(written) == {"zero_shot_ap50", "runs"}
    assert 0.0 <= written["zero_shot_ap50"] <= 1.0
    assert len(written["runs"]) == 4 * 2  # modes x seeds (one shot count)
    for run in written["runs"]:
        assert set(run) == {"mode", "shots", "seed", "ap50"}
        assert run["mode"] in ("full", "prompt_tuning", "linear_probe", "scratch")
        assert run["shots"] == 1 and run["seed"] in (1, 2)
        assert isinstance(run["ap50"], float) and 0.0 <= run["ap50"] <= 1.0
    assert {(run["mode"], run["seed"]) for run in written["runs"]} == {
        (mode, seed) for mode in transfer.MODES for seed in (1, 2)
    }
    assert (output / "ap50_vs_shots.png").stat().st_size > 1000
    assert os.path.isfile(output / "few_shot" / "shots1_seed2.json")
    printed = capsys.readouterr().out
    assert "zero-shot AP50" in printed and "| from scratch |" in printed and "[8/8]" in printed.replace(" ", "")
    with open(output / "details.json") as handle:
        details = json.load(handle)
    assert len(details["runs"]) == 8 and all(run["train_images"] >= 1 for run in details["runs"])


def test_forked_workers_give_the_same_results(demo_model, novel_dir, tmp_path):
    modes = ["prompt_tuning", "scratch"]
    in_process = transfer.main(tiny_arguments(demo_model, novel_dir, tmp_path / "one", modes, workers=1))
    forked = transfer.main(tiny_arguments(demo_model, novel_dir, tmp_path / "two", modes, workers=2))
    assert forked == in_process


def test_missing_demo_model_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit, match="make demo"):
        transfer.main(["--model", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "out")])


def test_train_demo_runs_the_demo_pretraining_first(tmp_path, monkeypatch):
    calls = []

    def fake_pretrain_main(argv):
        calls.append(argv)
        raise KeyboardInterrupt  # (stop here: the rest of the experiment is covered above)

    monkeypatch.setattr(transfer, "load_pretrain_example", lambda: SimpleNamespace(main=fake_pretrain_main))
    model = str(tmp_path / "demo")
    with pytest.raises(KeyboardInterrupt):
        transfer.main(["--model", model, "--train_demo", "--output_dir", str(tmp_path / "out")])
    assert calls == [["--output_dir", model]]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shots", "0"], "--shots"),
        (["--seeds", "0"], "--seeds"),
        (["--max_train_steps", "0"], "--max_train_steps"),
        (["--prompt_tuning_learning_rate", "nan"], "--prompt_tuning_learning_rate"),
    ],
)
def test_bad_arguments_are_rejected(arguments, message, capsys):
    with pytest.raises(SystemExit):
        transfer.parse_args(arguments)
    assert message in capsys.readouterr().err
