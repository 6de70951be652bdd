"""Bundles a built liblift.so into the package when one exists (LIBLIFT_PATH or the checkout's
.build/release), so `pip install ./bindings/python` after a release build works anywhere."""
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        candidate = Path(os.environ.get("LIBLIFT_PATH") or here.parents[1] / ".build" / "release" / "liblift.so")
        if candidate.is_file():
            target = Path(self.build_lib) / "liblift" / "liblift.so"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(candidate, target)


setup(cmdclass={"build_py": BuildPyWithLibrary})
