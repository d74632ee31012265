"""The built wheel installs entreg, entreg.losses and entreg.kernels and nothing top-level else."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_layout(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", ".*cache"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("entreg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"entreg"}, top_level
    for required in (
        "entreg/__init__.py",
        "entreg/py.typed",
        "entreg/losses/__init__.py",
        "entreg/kernels/__init__.py",
    ):
        assert required in names
    assert not any(n.startswith(("tests/", "experiments/", "losses/", "kernels/")) for n in names)


def test_installed_imports():
    import entreg.kernels
    import entreg.losses

    import entreg

    assert Path(entreg.losses.__file__).parent.name == "losses"
    assert entreg.kernels.__name__ == "entreg.kernels"
    assert (Path(entreg.__file__).parent / "py.typed").exists()
