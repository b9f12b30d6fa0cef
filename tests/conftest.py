"""pytest configuration: hypothesis profiles, the `slow` marker, and the
fixtures shared by the suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The recursive value strategies (helpers.values) sometimes draw more data
# than hypothesis likes for one example; that is their nature, not a bug in
# a test, and the health check for it failed runs at random seeds.
_BIG = [HealthCheck.data_too_large]
settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=_BIG)
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=_BIG)
settings.register_profile(
    "sanitize", max_examples=25, deadline=None,
    suppress_health_check=_BIG + [HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test; deselect with -m 'not slow'")


@pytest.fixture
def image_path(tmp_path):
    """A path where a test may write an image (in a fresh folder)."""
    return tmp_path / "image.pf"


class Folder:
    """A folder whose content a test declares; anything else found there at
    the end (a temporary file of an atomic write, say) fails the test."""

    def __init__(self, path):
        self.path = path
        self.expected: set[str] = set()

    def file(self, name: str):
        """The path of a file the test means to leave in the folder."""
        self.expected.add(name)
        return self.path / name

    def unexpected(self) -> list[str]:
        return sorted(set(os.listdir(self.path)) - self.expected)

    def assert_clean(self) -> None:
        assert self.unexpected() == [], f"files left behind in {self.path}"


@pytest.fixture
def clean_dir(tmp_path):
    """A Folder that must hold only the files the test declared when the
    test ends."""
    folder = Folder(tmp_path / "clean")
    folder.path.mkdir()
    yield folder
    folder.assert_clean()


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    """A folder shared by the examples of hypothesis tests (function-scoped
    fixtures are not reset between examples)."""
    return tmp_path_factory.mktemp("images")
