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
