import pytest


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project folder, the working folder of the test."""
    folder = tmp_path / "proj"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder
