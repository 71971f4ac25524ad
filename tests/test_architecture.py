import os
import subprocess
import sys

from tests import testing


def test_import_contracts_hold():
    # pyproject.toml [tool.importlinter]: data flows one way, and networks
    # never read the experiment config.
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint], cwd=testing.REPO_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_git_grep_finds_no_family_branch_outside_the_family_folders():
    result = subprocess.run(
        ["git", "grep", "-nE", r"is_yolact|isinstance\(.*Yolact|"
         r"architecture *==", "--", "orienmask_tf"],
        cwd=testing.REPO_DIR, capture_output=True, text=True)
    outside = [line for line in result.stdout.splitlines()
               if not line.startswith("orienmask_tf/families/")]
    assert not outside, outside


def test_numpy_augmentation_and_the_package_import_no_tensorflow():
    code = ("import sys\n"
            "import orienmask_tf\n"
            "from orienmask_tf.data import augment, coco, shapes\n"
            "from orienmask_tf.families.orienmask import augment as a\n"
            "from orienmask_tf.families.yolact import augment as b\n"
            "from orienmask_tf import registry\n"
            "registry.names()\n"
            "print(sorted(m for m in ('tensorflow', 'keras') "
            "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code],
                            cwd=testing.REPO_DIR, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
