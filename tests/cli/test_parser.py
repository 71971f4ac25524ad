import argparse
import subprocess
import sys

import pytest

from orienmask_tf import cli
from tests import testing

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")


def _commands(parser):
    action = next(a for a in parser._actions
                  if isinstance(a, argparse._SubParsersAction))
    return action.choices  # name -> parser, aliases included


def _shows_a_default(action):
    default = action.default
    return not (default is None or default is False or default == []
                or default is argparse.SUPPRESS)


def test_help_imports_no_tensorflow():
    # --help of the tool and of every command, in a fresh interpreter.
    code = (
        "import argparse, contextlib, io, sys\n"
        "from orienmask_tf import cli\n"
        "parser = cli.build_parser()\n"
        "sub = next(a for a in parser._actions\n"
        "           if isinstance(a, argparse._SubParsersAction))\n"
        "names = [None] + sorted(sub.choices)\n"
        "for name in names:\n"
        "    argv = ['--help'] if name is None else [name, '--help']\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            parser.parse_args(argv)\n"
        "        except SystemExit as exit:\n"
        "            assert exit.code == 0, argv\n"
        "print(len(names), sorted(m for m in ('tensorflow', 'keras', 'torch')"
        " if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code],
                            cwd=testing.REPO_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(None, 1)[1].strip() == "[]", result.stdout
    assert int(result.stdout.split()[0]) == 12  # 10 commands, val, tool
    assert result.stderr == ""


def test_every_option_has_help_that_shows_its_default():
    parser = cli.build_parser()
    for name, command in [("orienmask-tf", parser)] + sorted(
            _commands(parser).items()):
        text = command.format_help()  # every help string formats
        assert "usage:" in text
        formatter = command._get_formatter()
        for action in command._actions:
            if action.help is argparse.SUPPRESS:
                continue  # deprecated spellings (tested below)
            assert action.help and action.help.strip(), (name, action.dest)
            if action.option_strings and _shows_a_default(action) \
                    and not isinstance(action, argparse._HelpAction):
                shown = formatter._get_help_string(action)
                assert "default" in shown.lower(), (name, action.dest)
    train_help = _commands(parser)["train"].format_help()
    assert "--output-dir" not in train_help and "--output DIR" in train_help
    assert "(default: 1)" in train_help  # --verbose
    shapes_help = _commands(parser)["make-shapes"].format_help()
    assert "--out " not in shapes_help and "(default: 64)" in shapes_help


def test_deprecated_spellings_and_the_val_alias(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["make-shapes", "--out", "data/x"])
    assert args.output == "data/x"
    args = parser.parse_args(["train", "--config", TINY, "--output-dir",
                              "runs/y"])
    assert args.output == "runs/y"
    err = capsys.readouterr().err
    assert "--out is deprecated, use --output" in err
    assert "--output-dir is deprecated, use --output" in err
    args = parser.parse_args(["val", "--model", "m.keras"])
    assert args.func is cli.cmd_evaluate and args.command == "val"
    args = parser.parse_args(["make-shapes", "--output", "d"])
    assert args.output == "d" and args.quiet is False


def test_required_output_of_make_shapes(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["make-shapes", "--num-train", "1"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["orienmask-tf make-shapes: error: the following arguments "
                   "are required: --output (see 'orienmask-tf make-shapes "
                   "--help')"]


def test_did_you_mean_for_commands_choices_and_options(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["trian", "--config", TINY])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("orienmask-tf: error: argument COMMAND: "
                             "invalid choice: 'trian', did you mean 'train'?")
    with pytest.raises(SystemExit):
        cli.main(["export", "--model", "m.keras", "--format", "tflight"])
    err = capsys.readouterr().err
    assert err.startswith("orienmask-tf export: error: argument --format: "
                          "invalid choice: 'tflight', did you mean 'tflite'?")
    with pytest.raises(SystemExit):
        cli.main(["info", "--config", TINY, "--jsn", "--batch-size=2"])
    err = capsys.readouterr().err
    assert err.startswith("orienmask-tf info: error: unrecognized "
                          "arguments: --jsn (--jsn: did you mean --json?)")


def test_did_you_mean_for_config_keys(capsys):
    assert cli.main(["info", "--config", TINY, "--set",
                     "model.widht=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orienmask-tf info: error: ")
    assert "unknown key 'model.widht', did you mean 'model.width'?" in err[0]
    assert cli.main(["info", "--config", TINY, "--set", "trian.epochs=3"]) \
        == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_quiet_before_or_after_the_command():
    parser = cli.build_parser()
    assert parser.parse_args(["--quiet", "make-shapes", "--output",
                              "d"]).quiet is True
    assert parser.parse_args(["make-shapes", "--output", "d",
                              "-q"]).quiet is True
    assert parser.parse_args(["make-shapes", "--output", "d"]).quiet is False


def test_device_values_are_checked(capsys):
    parser = cli.build_parser()
    for value in ("cpu", "gpu", "gpu:1", "all", "GPU:0"):
        args = parser.parse_args(["predict", "--model", "m", "--images", "i",
                                  "--output", "o", "--device", value])
        assert args.device == value.lower()
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--device", "tpu"])
    assert "argument --device: expected cpu, gpu, gpu:N or all, got 'tpu'" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):  # info runs no network: no --device
        parser.parse_args(["info", "--config", TINY, "--device", "cpu"])


def test_device_cpu_runs_and_a_missing_gpu_is_one_line(capsys):
    import tensorflow as tf

    bench = ["benchmark", "--config", TINY, "--formats", "keras_eager",
             "--batch-sizes", "1", "--warmup", "0", "--runs", "1"]
    assert cli.main(bench + ["--device", "cpu"]) == 0
    assert tf.config.get_visible_devices("GPU") == []
    assert "keras_eager" in capsys.readouterr().out
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert cli.main(bench + ["--device", "gpu:0"]) == 2
    assert capsys.readouterr().err == (
        "orienmask-tf benchmark: error: --device gpu:0: TensorFlow sees no "
        "GPU\n")
