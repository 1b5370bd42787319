# Copyright (c) yolact_d2 contributors.
"""One way to pass config overrides to every tool, and quiet tools."""

import os
import subprocess
import sys

import pytest

from yolact_d2.engine.cli import ToolInputError, check_output_directory, split_config_opts

from common import REPO_ROOT, load_script

CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")


@pytest.mark.parametrize(
    "argv, own, opts",
    [
        (["--config-file", "c", "A"], ["--config-file", "c", "A"], []),  # "A" is no config key
        (["--config-file", "c", "OUTPUT_DIR", "o"], ["--config-file", "c"], ["OUTPUT_DIR", "o"]),
        (["--config-file", "c", "--opts", "SEED", "1"], ["--config-file", "c"], ["SEED", "1"]),
        (["--config-file", "c", "--", "SEED", "1"], ["--config-file", "c"], ["SEED", "1"]),
        # after an option taking several values, the first config key ends its values
        (
            ["--input", "a.jpg", "DATA", "MODEL.YOLACT.INPUT_SIZE", "400", "SEED", "2"],
            ["--input", "a.jpg", "DATA"],
            ["MODEL.YOLACT.INPUT_SIZE", "400", "SEED", "2"],
        ),
        # both forms at once, and a "--" among them, are one list
        (["SEED", "1", "--opts", "OUTPUT_DIR", "o"], [], ["SEED", "1", "OUTPUT_DIR", "o"]),
        (["MODEL.NOT_A_KEY", "1"], ["MODEL.NOT_A_KEY", "1"], []),  # left for the config's error
        (["--opts"], [], []),
    ],
)
def test_split_config_opts(argv, own, opts):
    assert split_config_opts(argv) == (own, opts)


def _load_tool(name):
    return load_script(name)


def _parse(name, argv):
    tool = _load_tool(name)
    for attr in ("get_parser", "parse_args"):
        if hasattr(tool, attr):
            if attr == "get_parser":
                return tool.get_parser().parse_args(argv)
            return tool.parse_args(argv)
    raise AssertionError(f"{name} has no parser")


# Every tool that takes a config, with its own required arguments.
TOOLS = [
    ("train_net.py", ["--config-file", CONFIG, "--eval-only"]),
    ("tools/demo.py", ["--config-file", CONFIG, "--input", "x.jpg", "y.jpg"]),
    (
        "tools/predict_dataset.py",
        ["--config-file", CONFIG, "--input", "x.jpg", "y.jpg", "--output-json", "o.json"],
    ),
    ("tools/export_model.py", ["--config-file", CONFIG, "--output", "o"]),
    ("tools/quantize.py", ["--config-file", CONFIG, "--output", "o"]),
    ("tools/visualize_prototypes.py", ["--config-file", CONFIG, "--input", "x.jpg"]),
    ("tools/profile_training.py", ["--config-file", CONFIG]),
    ("tools/benchmark.py", ["--configs", CONFIG, CONFIG]),
    ("tools/benchmark_nms.py", ["--config", CONFIG]),
]


@pytest.mark.parametrize("name, own", TOOLS, ids=[t[0] for t in TOOLS])
@pytest.mark.parametrize("form", ["bare", "--opts", "both"])
def test_every_tool_takes_both_forms(name, own, form):
    pairs = ["MODEL.WEIGHTS", "w.pth", "OUTPUT_DIR", "out"]
    tail = {
        "bare": pairs,
        "--opts": ["--opts"] + pairs,
        "both": pairs[:2] + ["--opts"] + pairs[2:],
    }[form]
    args = _parse(name, own + tail)
    assert args.opts == pairs
    if name in ("tools/demo.py", "tools/predict_dataset.py"):
        assert args.input == ["x.jpg", "y.jpg"]  # the overrides did not become inputs
    if name == "tools/benchmark.py":
        assert args.configs == [CONFIG, CONFIG]


def test_train_synthetic_demo_takes_both_forms(monkeypatch):
    tool = _load_tool("tools/train_synthetic_demo.py")
    seen = []
    monkeypatch.setattr(tool, "tool_config_or_exit", lambda c, opts: seen.append(opts) or 1 / 0)
    for argv in (["SOLVER.MAX_ITER", "3"], ["--opts", "SOLVER.MAX_ITER", "3"]):
        with pytest.raises(ZeroDivisionError):
            tool.main(argv)
    assert [o[2:] for o in seen] == [["SOLVER.MAX_ITER", "3"]] * 2


def test_help_shows_the_convention():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), "--help"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0 and "also accepted without --opts" in " ".join(proc.stdout.split())


@pytest.mark.parametrize("tool", ["train_net.py", "tools/demo.py", "tools/benchmark.py"])
def test_tools_print_no_third_party_import_warnings(tool):
    # CUDA_HOME names a folder, no GPU: torch.utils.cpp_extension would log "No CUDA runtime"
    env = dict(os.environ, CUDA_HOME=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, tool, "--help"], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    for message in ("torch.jit.script", "pkg_resources", "No CUDA runtime", "Warning"):
        assert message not in proc.stderr, proc.stderr


def test_the_filters_are_exact(tmp_path):
    """yolact_d2 leaves other warnings and the global filters alone."""
    env = dict(os.environ, CUDA_HOME=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    code = (
        "import warnings, logging\n"
        "before = list(warnings.filters)\n"
        "import yolact_d2\n"
        "assert warnings.filters == before, 'global warning filters changed'\n"
        "import torch, torch.utils.cpp_extension\n"
        "warnings.warn('torch.jit.script is fine but this one is mine', FutureWarning)\n"
        "logging.getLogger('torch.utils.cpp_extension').warning('another cpp_extension message')\n"
        "@torch.jit.script\n"
        "def f(x):\n"
        "    return x + 1\n"
    )
    script = tmp_path / "user_code.py"  # torch.jit.script reads the function's source
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "this one is mine" in proc.stderr
    assert "another cpp_extension message" in proc.stderr
    # a torch.jit.script call of the user's own still warns: only the import-time ones are gone
    assert proc.stderr.count("`torch.jit.script` is deprecated") == 1
    assert "No CUDA runtime" not in proc.stderr


def test_an_output_in_a_missing_directory_is_named_with_its_option(tmp_path):
    check_output_directory(str(tmp_path / "out.json"), "--output-json")  # exists: no error
    missing = tmp_path / "no" / "out.json"
    with pytest.raises(ToolInputError) as info:
        check_output_directory(str(missing), "--output")
    assert str(info.value) == (
        f"--output {str(missing)!r}: directory {str(tmp_path / 'no')!r} does not exist"
    )
