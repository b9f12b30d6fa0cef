"""Build of the permafrost C extension.

The project metadata lives in pyproject.toml; this file only describes the
extension module `permafrost._binding`, compiled from the binding
(python/permafrost/_binding.c) and every C file of the core (src/*.c).

Environment switches (read at build time):
  PERMAFROST_WERROR=1    -Wall -Wextra -Werror (gcc/clang), /W3 /WX (MSVC).
                         `make test` and CI build this way.
  PERMAFROST_SANITIZE=1  AddressSanitizer + UBSan (gcc/clang only), -O1 -g.
                         Used by `make pysan`; the resulting module must be
                         run with libasan preloaded (the Makefile does it).

Each combination of switches builds under its own build/py-<flavor>/
directory, so a sanitizer build never reuses objects or a finished module of
an ordinary build (and the reverse), even though pip builds in the tree.
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


WERROR = _env_flag("PERMAFROST_WERROR")
SANITIZE = _env_flag("PERMAFROST_SANITIZE")

FLAVOR = "-".join(
    name for name, on in (("werror", WERROR), ("san", SANITIZE)) if on
) or "default"

# Globbed, not listed: files are added to src/ as the core grows.
CORE_SOURCES = sorted(glob("src/*.c"))
HEADERS = sorted(glob("include/*.h") + glob("src/*.h") + glob("python/permafrost/*.h"))

GNU_STD = ["-std=c11"]
# Hidden visibility: only PyInit__binding (PyMODINIT_FUNC marks it) is
# exported, so calls into the core bind directly, not through the PLT.
GNU_OPT = ["-O2", "-fvisibility=hidden"]
GNU_WERROR = ["-Wall", "-Wextra", "-Werror"]
GNU_SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
# CPython builds extensions with -fwrapv, which makes signed overflow defined
# and so hides it from UBSan; the sanitizer build turns it back off.
GNU_SANITIZE_COMPILE = GNU_SANITIZE + ["-fno-wrapv"]

MSVC_OPT = ["/O2"]
MSVC_WERROR = ["/W3", "/WX"]


class BuildExt(build_ext):
    """Chooses compiler flags once the compiler is known (gcc/clang or MSVC)."""

    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        if SANITIZE and msvc:
            raise SystemExit("PERMAFROST_SANITIZE=1 needs gcc or clang, not MSVC")
        for ext in self.extensions:
            if msvc:
                compile_args = MSVC_OPT + (MSVC_WERROR if WERROR else [])
                link_args = []
            else:
                # The sanitizer flags come last so that their -O1 wins over -O2.
                compile_args = (GNU_STD + GNU_OPT + (GNU_WERROR if WERROR else [])
                                + (GNU_SANITIZE_COMPILE if SANITIZE else []))
                # -pthread: verify's threads (src/os.c)
                link_args = ["-pthread"] + (GNU_SANITIZE if SANITIZE else [])
            ext.extra_compile_args = compile_args + list(ext.extra_compile_args or [])
            ext.extra_link_args = link_args + list(ext.extra_link_args or [])
        super().build_extensions()


binding = Extension(
    "permafrost._binding",
    sources=["python/permafrost/_binding.c"] + CORE_SOURCES,
    include_dirs=["include", "src"],
    # A changed header, or changed flags in this file, rebuilds the module
    # (build_ext compares timestamps with these).
    depends=HEADERS + ["setup.py"],
    # shm_open is in librt before glibc 2.34 (an empty stub after).
    libraries=(["bcrypt"] if sys.platform == "win32"
               else ["rt"] if sys.platform.startswith("linux") else []),
)

setup(
    ext_modules=[binding],
    cmdclass={"build_ext": BuildExt},
    options={"build": {"build_base": os.path.join("build", "py-" + FLAVOR)}},
)
