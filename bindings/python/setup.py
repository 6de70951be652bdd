"""Builds the liblift wheel: the ctypes bindings plus a copy of a built liblift.so, so the wheel
is platform-specific (tagged py3-none-linux_<arch>: the library is native code, the Python is
not tied to a CPython version). The library comes from LIBLIFT_PATH or, in a checkout, from
../../.build/release; without one the build fails (a wheel without its library is useless).
The package's version is the library's own (lift_version(), from Include/lift.h).
    LIBLIFT_PATH=/path/to/liblift.so python3 -m pip wheel --no-deps -w dist bindings/python
(`make wheel` at the top of the checkout does this.)"""
import ctypes
import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


def library() -> Path:
    env = os.environ.get("LIBLIFT_PATH")
    path = Path(env) if env else HERE.parents[1] / ".build" / "release" / "liblift.so"
    if path.is_dir():
        path = path / "liblift.so"
    if not path.is_file():
        raise SystemExit(
            f"liblift.so not found at {path}: build it first (swift build -c release -Xswiftc -static-stdlib, "
            "or `make` in the checkout) or set LIBLIFT_PATH to a built liblift.so; a wheel without the library "
            "would not work")
    return path.resolve()


def library_version(path: Path) -> str:
    lib = ctypes.CDLL(str(path))
    lib.lift_version.restype = ctypes.c_char_p
    return lib.lift_version().decode()


class BuildPyWithLibrary(build_py):
    """Copies the library into the package."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "liblift" / "liblift.so"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library(), target)
        # lift_file_check's checking process, found beside the library.
        helper = library().parent / "lift-file-check"
        if not helper.is_file():
            raise SystemExit(f"{helper} not found: it is built with liblift.so (swift build -c release)")
        shutil.copy2(helper, target.parent / "lift-file-check")


class PlatformWheel(bdist_wheel):
    """Tags the wheel py3-none-<platform>: it carries native code but no CPython extension."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        return "py3", "none", sysconfig.get_platform().replace("-", "_").replace(".", "_")


class NativeDistribution(Distribution):
    def has_ext_modules(self):
        return True


setup(version=library_version(library()), distclass=NativeDistribution,
      cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
