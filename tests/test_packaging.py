"""The package as a user installs it: one name (lit_vae), the configs inside it, the layers of
the README enforced by import-linter, the style rules and types clean, a tested Lightning version."""

import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import lightning
import pytest
from packaging.requirements import Requirement

from lit_vae.callbacks.lightning_loop_state import check_lightning_version
from lit_vae.console import shipped_config, shipped_configs
from tests.helpers import REPO

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The package as ``pip install .`` lays it out (a non-editable build into a folder)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(REPO)], check=True, capture_output=True)
    return target


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the project's contracts, on the lit_vae package under ``root``."""
    return subprocess.run([str(BIN / "lint-imports"), "--config", str(REPO / "pyproject.toml")], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": str(BIN)}, capture_output=True, text=True)


def a_copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package (the links' files copied) with ``line`` appended to ``module``."""
    shutil.copytree(REPO / "lit_vae", tmp_path / "lit_vae")
    path = tmp_path / "lit_vae" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_lightning_is_a_tested_version():
    (requirement,) = [r for r in map(Requirement, requires("lit-vae")) if r.name == "lightning"]
    assert requirement.specifier.contains(lightning.__version__), (
        f"lightning {lightning.__version__} is not a version this project was tested on ({requirement.specifier}); "
        "run the whole suite on it, then widen the bound in pyproject.toml")


def test_the_loop_state_workaround_names_the_versions_it_is_verified_on():
    """The rewrite of Lightning's saved loop state (exact resume at epoch ends) says when it runs
    on a Lightning it was not verified on; the installed one is verified."""
    assert check_lightning_version(lightning.__version__)
    with pytest.warns(UserWarning, match=r"Lightning 2\.7\.0: exact resume at epoch ends .* verified on Lightning 2\.6 only"):
        assert not check_lightning_version("2.7.0")


def test_the_wheel_installs_one_name_with_its_configs_and_data(built):
    assert sorted(p.name for p in built.iterdir() if not p.name.endswith(".dist-info") and p.name != "bin") == ["lit_vae"]
    package = built / "lit_vae"
    assert {p.name for p in (package / "configs").glob("*.yaml")} == {p.name for p in (REPO / "configs").glob("*.yaml")}
    assert (package / "paper_values.csv").is_file() and (package / "py.typed").is_file()
    assert (package / "datamodules" / "mnist.py").is_file() and (package / "callbacks" / "checkpoint.py").is_file()


def test_the_checkouts_package_folder_is_the_installed_package():
    """lit_vae/datamodules, lit_vae/callbacks and lit_vae/configs are links to the brief's top-level
    folders, not copies: one file for each module."""
    for name in ("datamodules", "callbacks", "configs"):
        assert (REPO / "lit_vae" / name).is_symlink() and (REPO / "lit_vae" / name).resolve() == (REPO / name).resolve()


@pytest.mark.parametrize("folder", ["callbacks", "datamodules"])
def test_a_top_level_folder_imported_by_its_name_is_the_package_itself(folder):
    """From the checkout's root, ``import callbacks`` (and any of its submodules, imported before or
    after ``lit_vae``'s) gives the module objects of ``lit_vae.callbacks``: one per file, so that
    ``isinstance`` holds across the two names."""
    package = f"lit_vae.{folder}"
    submodules = sorted(p.stem for p in (REPO / folder).glob("*.py") if p.stem != "__init__")
    script = "\n".join([
        "import importlib, sys",
        f"short = importlib.import_module({folder!r})",
        f"long = importlib.import_module({package!r})",
        "assert short is long, (short, long)",
        f"for sub in {submodules!r}:",
        f"    assert importlib.import_module({folder!r} + '.' + sub) is importlib.import_module({package!r} + '.' + sub), sub",
        "objects = {id(m): m for m in list(sys.modules.values())}.values()  # each module object once",
        f"files = [m.__file__ for m in objects if '/{folder}/' in (getattr(m, '__file__', None) or '')]",
        "assert len(files) == len(set(files)), sorted(files)",
        "print('one module per file')",
    ])
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "one module per file" in result.stdout, result.stderr[-2000:]


def test_the_layers_contract_holds_in_the_checkout():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_an_import_that_points_up_breaks_the_layers_contract(tmp_path):
    result = lint_imports(a_copy_with(tmp_path, "estimators.py", "from lit_vae.model import VAE  # an arrow pointing up"))
    assert result.returncode != 0
    assert "lit_vae.estimators -> lit_vae.model" in result.stdout


def test_a_callback_that_imports_a_model_class_breaks_the_interfaces_contract(tmp_path):
    result = lint_imports(a_copy_with(tmp_path, "callbacks/lower_bound.py", "from lit_vae.model import VAE"))
    assert result.returncode != 0 and "BROKEN" in result.stdout


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory) -> Path:
    """One mypy cache for the module's two runs: the second reads torch's and Lightning's types
    from it instead of analysing them again (a minute, against seconds)."""
    return tmp_path_factory.mktemp("mypy_cache")


def mypy(root: Path, cache: Path) -> subprocess.CompletedProcess:
    """mypy with the settings of ``root/pyproject.toml`` on the package under ``root``."""
    return subprocess.run([str(BIN / "mypy"), "--config-file", str(root / "pyproject.toml"), "--cache-dir", str(cache)],
                          cwd=root, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.xdist_group("mypy")
def test_the_type_checker_is_clean(mypy_cache):
    """The package ships ``py.typed``: mypy, with the settings of pyproject.toml, finds nothing."""
    result = mypy(REPO, mypy_cache)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.xdist_group("mypy")
def test_a_type_error_fails_the_type_checker(tmp_path, mypy_cache):
    copy = a_copy_with(tmp_path, "estimators.py", 'width: int = "wide"  # a str where an int is declared')
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    result = mypy(copy, mypy_cache)
    assert result.returncode == 1 and "estimators.py" in result.stdout


class TestShippedConfigs:
    def test_a_name_resolves_to_the_packaged_config(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        (path,) = {shipped_config("mnist"), shipped_config("mnist.yaml")}
        assert Path(path).name == "mnist.yaml" and Path(path).read_text() == (REPO / "configs" / "mnist.yaml").read_text()
        assert shipped_configs(["fit", "--config", "frey_face", "-c=mnist", "--model.latent_dim", "mnist"]) == [
            "fit", "--config", shipped_config("frey_face"), f"-c={path}", "--model.latent_dim", "mnist"]

    def test_a_file_of_that_name_wins(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "mnist").write_text("trainer: {}\n")
        assert shipped_config("mnist") == "mnist"

    @pytest.mark.parametrize("name", ["no_such_config", "x.yaml", "../configs/mnist", "__init__"])
    def test_a_name_that_is_neither_is_one_line(self, tmp_path, monkeypatch, capsys, name):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exit_:
            shipped_config(name)
        assert exit_.value.code == 2
        assert capsys.readouterr().err.startswith(f"error: --config: no file {name}, and no shipped config of that name")


@pytest.mark.slow
class TestOutsideTheCheckout:
    """From an empty folder elsewhere, as a user with the package installed and no checkout."""

    def run(self, cwd, *args, code=None):
        command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "lit_vae", *args]
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)

    def test_generic_names_are_not_installed(self, tmp_path):
        for name in ("callbacks", "datamodules", "configs"):
            result = self.run(tmp_path, code=f"import {name}")
            assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr

    def test_help_and_a_shipped_config_run_beside_a_stray_callbacks_module(self, tmp_path, data_dir):
        (tmp_path / "callbacks.py").write_text("raise RuntimeError('a user module called callbacks')\n")
        (tmp_path / "datamodules.py").write_text("raise RuntimeError('a user module called datamodules')\n")
        help_ = self.run(tmp_path, "fit", "--help")
        assert help_.returncode == 0 and "--trainer.max_steps" in help_.stdout and "--model.help" in help_.stdout
        result = self.run(tmp_path, "fit", "--config", "mnist", "--trainer.max_steps=50", f"--data.init_args.data_dir={data_dir}",
                          "--progress_bar.refresh_rate=0")
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "runs" / "mnist_nz20" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_tests_of_one_xdist_group_share_a_worker(tmp_path):
    """The suite's ``--dist loadgroup`` keeps an ``xdist_group`` in one process (the DDP runs never
    beside each other, the mypy runs on one cache); some pytest and xdist versions silently don't."""
    (tmp_path / "test_grouped.py").write_text(
        "import os\nimport pytest\n\n"
        + "".join(f"@pytest.mark.xdist_group('g')\ndef test_{i}():\n"
                  f"    open('{tmp_path}/{i}', 'w').write(os.environ['PYTEST_XDIST_WORKER'])\n\n" for i in range(4)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's settings
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert len({(tmp_path / str(i)).read_text() for i in range(4)}) == 1
