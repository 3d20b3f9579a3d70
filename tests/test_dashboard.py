"""TensorBoard itself, queried over its HTTP API as its web page does, shows what the README's
"reading the dashboard" section promises: the bound and its terms, active units, the pictures,
the HPARAMS tab with the run's settings and final metrics, and the Projector's embedding."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lit_vae.cli import cli
from lit_vae.events import read_scalars
from tests.helpers import REPO, fit

pytestmark = pytest.mark.slow

RUN = "mnist_nz3/version_0"


@pytest.fixture(scope="module")
def board(tmp_path_factory, data_dir):
    """A one-epoch MNIST run (Nz = 3, 500 steps, ending on the schedule) and its ``predict``, served by ``tensorboard --logdir runs``."""
    tmp = tmp_path_factory.mktemp("board")
    fit(tmp, data_dir, "--model.init_args.latent_dim=3", "--model.init_args.hidden_dim=50", "--trainer.max_steps=500")
    cli(["predict", "--config", str(REPO / "configs" / "mnist.yaml"), f"--data.init_args.data_dir={data_dir}",
         "--progress_bar.refresh_rate=0", f"--ckpt_path={tmp / 'runs' / RUN / 'checkpoints' / 'last.ckpt'}"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp / "runs"), "--host", "127.0.0.1",
                               "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # until it serves, and has read both runs
            try:
                if {RUN, RUN + "/predict"} <= set(_get(url, "/data/runs")):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "tensorboard did not come up"
            time.sleep(1)
        yield url, tmp / "runs" / RUN
    finally:
        server.terminate()
        server.wait(30)


def _get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, path: str, body: dict):
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_scalars_the_bound_its_terms_and_active_units(board):
    url, run_dir = board
    tags = _get(url, "/data/plugin/scalars/tags")[RUN]
    wanted = {"lower_bound/train", "lower_bound/test", "reconstruction/train", "reconstruction/test",
              "kl/train", "kl/test", "latent/active_units"}
    assert wanted <= set(tags)
    logged = read_scalars(run_dir)
    for tag in wanted:
        served = _get(url, f"/data/plugin/scalars/scalars?run={RUN}&tag={tag}")  # [[wall time, step, value], ...]
        assert [(step, pytest.approx(value, abs=1e-4)) for _, step, value in served] == logged[tag]


def test_images(board):
    url, _ = board
    tags = _get(url, "/data/plugin/images/tags")[RUN]
    assert {"images/manifold", "images/samples", "images/reconstructions"} <= set(tags)
    served = _get(url, f"/data/plugin/images/images?run={RUN}&tag=images/manifold&sample=0")
    assert served and served[-1]["step"] == 50_000


def test_hparams_lists_the_settings_and_the_final_metrics(board):
    url, run_dir = board
    experiment = _post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
    settings = {info["name"] for info in experiment["hparamInfos"]}
    assert {"latent_dim", "hidden_dim", "learning_rate", "seed", "model", "data"} <= settings
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"lower_bound/train", "lower_bound/test"} <= metrics
    groups = _post(url, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10, "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
        "colParams": [{"hparam": "latent_dim"}, {"metric": {"tag": "lower_bound/test"}}]})
    group, = groups["sessionGroups"]
    assert group["hparams"]["latent_dim"] == 3
    final = read_scalars(run_dir)["lower_bound/test"][-1]
    value, = [m for m in group["metricValues"] if m["name"]["tag"] == "lower_bound/test"]
    assert (int(value["trainingStep"]), value["value"]) == (final[0], pytest.approx(final[1], abs=1e-3))


def test_projector_has_the_embedding_with_labels_and_sprites(board):
    url, _ = board
    run = RUN + "/predict"
    assert run in _get(url, "/data/plugin/projector/runs")
    embedding, = _get(url, f"/data/plugin/projector/info?run={run}")["embeddings"]
    assert embedding["tensorName"].startswith("latent_mu") and embedding["tensorShape"] == [10_000, 3]
    assert embedding["sprite"]["singleImageDim"] == [28, 28]
    with urllib.request.urlopen(f"{url}/data/plugin/projector/metadata?run={run}&name={embedding['tensorName']}&num_rows=5") as r:
        assert r.read().decode().split() == ["7", "2", "1", "0", "4"]  # the first test digits
