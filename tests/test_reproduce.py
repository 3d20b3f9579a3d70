"""``lit-vae reproduce``: the shipped manifest, the sweep's kill-and-continue, the SLURM path
through submitit's local executor, ``--status`` and the report."""

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lit_vae import launch, sweep
from lit_vae.figures import Run, band
from lit_vae.report import export_curves, read_curves, table, thin, trailing_mean, value_at, verdict
from lit_vae.reproduce import main as reproduce
from lit_vae.reproduce import write_report
from lit_vae.sweep_display import status_table

# Two small Frey Face runs (hidden 50): 500 steps each, checkpoints every 50 steps.
TINY = {"runs": [
    {"name": "aevb", "figure": 2, "panel": "frey_face_nz2", "config": "frey_face", "samples": 50_000,
     "args": {"model.init_args.latent_dim": 2, "model.init_args.hidden_dim": 50}},
    {"name": "wake_sleep", "figure": 2, "panel": "frey_face_nz2", "config": "figure2_wake_sleep_frey_face", "samples": 50_000,
     "args": {"model.init_args.latent_dim": 2, "model.init_args.hidden_dim": 50}},
]}


class TestManifest:
    def test_every_panel_of_figures_2_and_3_with_each_method(self):
        specs = sweep.load_manifest()
        figure2 = {(s.panel, s.config) for s in specs if s.figure == 2}
        panels = {f"mnist_nz{n}" for n in (3, 5, 10, 20, 200)} | {f"frey_face_nz{n}" for n in (2, 5, 10, 20)}
        assert {panel for panel, _ in figure2} == panels
        assert len(figure2) == 18  # AEVB and wake-sleep in each panel
        for spec in specs:
            settings = spec.settings()
            if spec.figure == 2:
                assert settings["model"]["init_args"]["latent_dim"] == int(spec.panel.rpartition("nz")[2])
                assert ("WakeSleep" in settings["model"]["class_path"]) == spec.name.endswith("_wake_sleep")
        figure3 = {(s.panel, s.settings()["model"]["class_path"].rpartition(".")[2]) for s in specs if s.figure == 3}
        assert figure3 == {(f"n{n}", m) for n in (1000, 50000) for m in ("VAE", "WakeSleep", "MCEM")}

    def test_the_study_manifests_in_benchmarks_load(self):
        for path in sorted(Path(sweep.__file__).resolve().parent.parent.glob("benchmarks/*.yaml")):
            specs = sweep.load_manifest(path)
            assert specs and all(spec.figure in (2, 3) for spec in specs), path

    def test_a_manifests_arguments_override_the_sweeps(self, tmp_path):
        """A manifest run's ``args`` come last on its ``fit`` command line (jsonargparse: the last
        value wins), so a study can keep every step checkpoint the sweep would thin out."""
        spec = sweep.RunSpec(**{**TINY["runs"][0], "args": {"checkpoint.every_n_train_steps": 7, "checkpoint.save_top_k": -1}})
        command = sweep.Plan(spec, samples=spec.samples, out=tmp_path, seed=1, threads=1).command()
        intervals = [arg.partition("=")[2] for arg in command if arg.startswith("--checkpoint.every_n_train_steps=")]
        assert intervals[-1] == "7" and len(intervals) == 2  # the sweep's own, then the manifest's
        assert "--checkpoint.save_top_k=-1" in command

    def test_budgets_are_the_shipped_configs_step_counts(self):
        """The manifest's budgets (10^7, 2 x 10^7) turn into the max_steps each shipped config
        states for the paper's run (MCEM: 5 updates per minibatch)."""
        for spec in sweep.load_manifest():
            assert spec.max_steps(spec.samples) == spec.settings()["trainer"]["max_steps"], spec.name

    @pytest.mark.parametrize("name", ["runs: 2026", "runs #1"])
    def test_an_output_folder_whose_name_reads_as_yaml_is_refused(self, tmp_path, capsys, name):
        with pytest.raises(SystemExit) as exit_:
            reproduce(["--out", str(tmp_path / name), "--status"])
        assert exit_.value.code == 2 and "would read this path as YAML" in capsys.readouterr().err
        assert not (tmp_path / name).exists()

    def test_without_matplotlib_nothing_starts(self, tmp_path, capsys, monkeypatch):
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in an environment without it
        with pytest.raises(SystemExit) as exit_:
            reproduce(["--out", str(tmp_path / "out"), "--figure", "2", "--samples", "2000"])
        assert exit_.value.code == 2 and 'pip install "lit-vae[figures]"' in capsys.readouterr().err
        assert not (tmp_path / "out").exists()

    def test_unknown_panels_and_bad_entries_are_named(self, tmp_path):
        specs = sweep.load_manifest()
        with pytest.raises(ValueError, match="no panel mnist_nz7 in the manifest; it has: .*mnist_nz20"):
            sweep.select(specs, panels=["mnist_nz7"])
        assert {s.panel for s in sweep.select(specs, figures=[3])} == {"n1000", "n50000"}
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"runs": [{"name": "x", "figure": 2, "panel": "p", "config": "mnist"}]}))
        with pytest.raises(ValueError, match="run 1 .*samples"):
            sweep.load_manifest(bad)
        bad.write_text(yaml.safe_dump({"runs": [{**TINY["runs"][0], "config": "nope"}]}))
        with pytest.raises(ValueError, match="no shipped config named nope"):
            sweep.load_manifest(bad)


class TestReport:
    def test_thin_keeps_round_points_and_the_last(self):
        points = [(1600 * k, float(k)) for k in range(1, 6251)]  # a Frey Face train curve to 10^7
        kept = thin(points, per_decade=10)
        steps = [s for s, _ in kept]
        assert steps[-1] == 10_000_000 and 1_000_000 in steps and 8_000 in steps
        decades = math.log10(10_000_000 / 1600)
        assert len(kept) <= 10 * (decades + 1) + 9 * (decades + 1)  # bins plus round points
        assert set(kept) <= set(points)

    def test_table_against_the_paper(self, tmp_path):
        seeds = [Run(tmp_path, "MNIST", "AEVB", 20, 50_000, {"lower_bound/test": [(10**6, test), (10**7, -100.0)],
                                                             "lower_bound/train": [(999_000, -121.0)]})
                 for test in (-120.0, -126.0)]
        text = table([(run, {"figure": 2, "panel": "mnist_nz20", "run": f"figure2_mnist_nz20_seed{i + 1}"})
                      for i, run in enumerate(seeds)])
        # The paper's readings (shared/paper/figure2.csv): test -123.9 at 10^6, -104.7 at 10^7; train -125.9, -104.2.
        row = "| 2 | mnist_nz20 | AEVB | figure2_mnist_nz20 |"
        assert f"{row} test | 1e+06 | 2 | -123.0 [-126.0, -120.0] |  | -123.9 | within the spread of our seeds |" in text
        assert (f"{row} test | 1e+07 | 2 | -100.0 [-100.0, -100.0] |  | -104.7 | "
                "outside: paper below our range by 4.7 nats (our seeds agree exactly) |") in text
        # 999,000 is within 2% of 10^6, but one train point cannot cover the paper's 230,000-sample window.
        assert f"{row} train | 1e+06 | 2 | -121.0 [-121.0, -121.0] |  | -125.9 |  |" in text
        assert f"{row} train | 1e+07 | 0 |  |  | -104.2 |  |" in text  # not reached: the paper's alone
        assert value_at([(10**6, 1.0)], 2 * 10**6) is None
        # Two settings of one panel and method (a study's runs) are two rows, not two seeds of one.
        studies = table([(seeds[i], {"figure": 2, "panel": "mnist_nz20", "run": name}) for i, name in enumerate(("step_a", "step_b"))])
        assert "| step_a | test | 1e+06 | 1 | -120.0 |" in studies and "| step_b | test | 1e+06 | 1 | -126.0 |" in studies

    def test_the_trailing_mean_of_a_line_is_its_value_at_the_windows_centre(self):
        """Per-epoch means of the line b(s) = -150 + 3e-5 s (each the mean over its epoch, so the
        line's value at the epoch's centre): the mean over (T - w, T] is b(T - w / 2)."""
        epoch = 50_000
        points = [(k * epoch, -150 + 3e-5 * (k * epoch - epoch / 2)) for k in range(1, 41)]
        assert trailing_mean(points, 10**6, 230_000, epoch) == pytest.approx(-150 + 3e-5 * (10**6 - 115_000))
        # Thinned to every fourth epoch, still exact for a line.
        assert trailing_mean(points[::4], 10**6 - 50_000, 230_000, epoch) == pytest.approx(-150 + 3e-5 * (950_000 - 115_000))
        assert trailing_mean(points, 100_000, 230_000, epoch) is None  # the window starts before the curve
        assert trailing_mean(points[:10], 10**6, 230_000, epoch) is None  # the curve ends at 500,000

    def test_verdict_in_nats_and_multiples_of_the_spread(self):
        assert verdict([-120.0, -126.0, -123.0], -123.9) == "within the spread of our seeds"
        assert verdict([-120.0, -122.0], -126.0) == "outside: paper below our range by 4.0 nats (2.0x our spread)"
        assert verdict([700.0, 710.0], 760.0) == "outside: paper above our range by 50.0 nats (5.0x our spread)"
        assert verdict([-120.0, -122.0], -119.5) == ("outside: paper above our range by 0.5 nats (0.2x our spread), "
                                                     "within the +-1 nat of reading the figure")
        assert verdict([-120.0, -122.0], -119.96) == ("outside: paper above our range by 0.04 nats (0.02x our spread), "
                                                      "within the +-1 nat of reading the figure")  # never "by 0.0"
        assert verdict([568.4, 725.8], 568.39) == ("outside: paper below our range by 0.01 nats (<0.01x our spread), "
                                                   "within the +-1 nat of reading the figure")
        assert verdict([-120.0], -126.0) == "one seed, no spread: +6.0 nats"
        assert verdict([], -126.0) == verdict([-120.0], None) == ""

    def test_band_over_seeds_of_different_lengths(self):
        steps, mean, low, high = band([[(10, 1.0), (100, 3.0), (1000, 5.0)], [(10, 3.0), (100, 5.0)]])
        assert steps.tolist() == [10, 100, 1000]
        assert mean.tolist() == [2.0, 4.0, 5.0] and low.tolist() == [1.0, 3.0, 5.0] and high.tolist() == [3.0, 5.0, 5.0]
        steps, mean, _, _ = band([[(10, 1.0), (1000, 3.0)], [(100, 7.0)]])  # log-x interpolation: 2.0 at 100
        assert mean.tolist() == [1.0, 4.5, 3.0]

    def test_curves_csv_round_trip(self, tmp_path):
        run = Run(tmp_path, "Frey Face", "wake-sleep", 5, 1600, {"lower_bound/train": [(1600, 1.5), (3200, 2.25)],
                                                                 "latent/other": [(1, 0.0)]})
        path = export_curves(run, {"run": "r", "figure": 2, "panel": "frey_face_nz5", "seconds": 3.5}, tmp_path / "r.csv")
        back, meta = read_curves(path)
        assert (back.dataset, back.method, back.latent_dim, back.train_size) == ("Frey Face", "wake-sleep", 5, 1600)
        assert back.scalars == {"lower_bound/train": [(1600, 1.5), (3200, 2.25)]}
        assert meta["panel"] == "frey_face_nz5" and meta["seconds"] == "3.5"

    def test_report_merges_the_sittings_of_the_sweep_into_its_own_in_time_order(self, tmp_path):
        out, to = tmp_path / "out", tmp_path / "docs"
        out.mkdir(), to.mkdir()
        older = "2026-01-01 10:00:00 to 11:00:00 (1:00:00): 2 run(s), 1 done"
        both = "2026-01-02 10:00:00 to 10:30:00 (0:30:00): 2 run(s), 2 done"
        newer = "2026-01-03 09:00:00 to 09:01:00 (0:01:00): 2 run(s), 2 done"
        (out / "sittings.log").write_text(f"{newer}\n{both}\n")
        (to / "sittings.log").write_text(f"{older}\n{both}\n")
        (spec,) = sweep.select(sweep.load_manifest(), names=["figure2_mnist_nz20"])
        write_report([sweep.Plan(spec, 10**7, out, 1, 1)], [], to)
        assert (to / "sittings.log").read_text() == f"{older}\n{both}\n{newer}\n"
        report = (to / "report.md").read_text()
        assert f"```\n{older}\n{both}\n{newer}\n```" in report
        assert "Not run yet: figure2_mnist_nz20." in report


def _final_state(root):
    """Parameters and optimizer state of a run's final checkpoint."""
    (path,) = root.glob("version_*/checkpoints/last.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["samples_evaluated"], checkpoint["state_dict"], checkpoint["optimizer_states"]


def _assert_same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    _assert_equal_trees(a[2], b[2])


def _assert_equal_trees(a, b):
    """Two optimizer states equal leaf by leaf: tensors exactly (dtype, shape, values), the rest by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            _assert_equal_trees(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_equal_trees(x, y)
    else:
        assert a == b


@pytest.mark.slow
class TestSweep:
    def test_killed_sweep_continues_every_run_to_the_uninterrupted_result(self, tmp_path, data_dir, monkeypatch, capsys):
        manifest = _tiny_manifest(tmp_path)
        common = ["reproduce", "--manifest", str(manifest), "--workers", "2"]
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        with pytest.raises(SystemExit, match="0"):  # the uninterrupted sweep
            reproduce([*common[1:], "--out", str(tmp_path / "a")])

        out = tmp_path / "b"
        sweep_process = subprocess.Popen([sys.executable, "-m", "lit_vae", *common, "--out", str(out)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not all(any((out / name).glob("version_*/checkpoints/*step=*.ckpt")) for name in ("aevb", "wake_sleep")):
            assert time.monotonic() < deadline and sweep_process.poll() is None
            time.sleep(0.2)
        sweep_process.send_signal(signal.SIGKILL)
        sweep_process.wait()
        time.sleep(1)  # the runs die with the sweep (PR_SET_PDEATHSIG)
        status = status_table([sweep.Plan(spec, spec.samples, out, 1, 1) for spec in sweep.load_manifest(manifest)])
        assert [line.split()[1] for line in status.splitlines()[1:]] == ["stopped", "stopped"], status

        with pytest.raises(SystemExit, match="0"):  # the same command again
            reproduce([*common[1:], "--out", str(out)])
        for name in ("aevb", "wake_sleep"):
            assert "--ckpt_path=last" in (out / name / "train.log").read_text()  # continued, not restarted
            assert len(list((out / name).glob("version_*"))) == 1
            _assert_same(_final_state(out / name), _final_state(tmp_path / "a" / name))
        # Everything done: the same command again starts nothing.
        with pytest.raises(SystemExit) as exit_:
            reproduce([*common[1:], "--out", str(out)])
        assert exit_.value.code == 0 and "2 of 2 run(s) done" in capsys.readouterr().err
        assert (out / "aevb" / "train.log").read_text().count("=== ") == 2
        # One line per sitting that ended (the killed one could not write its own).
        sittings = [line.split(": ")[1] for line in (out / "sittings.log").read_text().splitlines()]
        assert sittings == ["2 run(s), 2 done, 2 worker(s) x 1 thread(s)"] * 2

        # The report, and the same report again from its curves CSVs alone.
        assert {p.name for p in out.iterdir()} >= {"figure2.png", "report.md", "curves"}
        report = (out / "report.md").read_text()
        for name in ("aevb", "wake_sleep"):
            (out / name).rename(tmp_path / f"moved_{name}")
        reproduce(["--manifest", str(manifest), "--out", str(out), "--report", "--curves", str(out / "curves"),
                   "--report-to", str(tmp_path / "again")])
        assert (tmp_path / "again" / "report.md").read_text() == report
        assert (tmp_path / "again" / "figure2.png").stat().st_size > 10_000

    def test_seeds_give_each_run_its_folders_and_the_report_its_bands(self, tmp_path, data_dir, monkeypatch):
        """``reproduce --seeds 2 --figure 2 --samples 20000`` (one panel of it): two runs per
        entry, seed 1 under the manifest's name and seed 2 as ``<name>_seed2``; the report's table
        gives the mean and range of the two seeds at the budget, and its curves CSVs one per seed."""
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        out = tmp_path / "out"
        with pytest.raises(SystemExit, match="0"):
            reproduce(["--seeds", "2", "--figure", "2", "--samples", "20000", "--panel", "frey_face_nz2", "--out", str(out)])
        names = ["figure2_frey_face_nz2", "figure2_frey_face_nz2_wake_sleep"]
        assert {p.name for p in (out / "curves").iterdir()} == {f"{n}{s}.csv" for n in names for s in ("", "_seed2")}
        seeds = {read_curves(out / "curves" / f"{n}{s}.csv")[1]["seed"] for n in names for s in ("", "_seed2")}
        assert seeds == {"1", "2"}
        values = {seed: value_at(read_curves(out / "curves" / f"figure2_frey_face_nz2{suffix}.csv")[0].scalars["lower_bound/test"], 20_000)
                  for seed, suffix in (("1", ""), ("2", "_seed2"))}
        assert values["1"] != values["2"]  # two seeds, two runs
        band_text = f"{sum(values.values()) / 2:.1f} [{min(values.values()):.1f}, {max(values.values()):.1f}]"
        assert f"| 2 | frey_face_nz2 | AEVB | figure2_frey_face_nz2 | test | 2e+04 | 2 | {band_text} |" in (out / "report.md").read_text()

    def test_a_second_sweep_on_the_same_folder_leaves_the_runs_to_the_first(self, tmp_path, data_dir, monkeypatch, capsys):
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        manifest, out = _tiny_manifest(tmp_path), tmp_path / "out"
        args = ["reproduce", "--manifest", str(manifest), "--workers", "2", "--out", str(out)]
        first = subprocess.Popen([sys.executable, "-m", "lit_vae", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not all((out / name / "train.log").exists() for name in ("aevb", "wake_sleep")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        with pytest.raises(SystemExit) as exit_:
            reproduce(args[1:])
        assert exit_.value.code == 0
        assert "left to another process that trains them: aevb, wake_sleep" in capsys.readouterr().err
        assert first.wait(timeout=300) == 0
        for name in ("aevb", "wake_sleep"):
            assert [p.name for p in (out / name).glob("version_*")] == ["version_0"]
            assert not (out / name / sweep.FAILED).exists()
            assert (out / name / "train.log").read_text().count("=== ") == 1  # started once
        assert sweep.status(sweep.Plan(sweep.load_manifest(manifest)[0], 50_000, out, 1, 1)).state == "done"

    def test_a_failed_run_is_reported_and_the_others_go_on(self, tmp_path, data_dir, monkeypatch, capsys):
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        broken = {**TINY["runs"][1], "name": "broken", "args": {"model.init_args.latent_dim": 0}}
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(yaml.safe_dump({"runs": [TINY["runs"][0], broken]}))
        with pytest.raises(SystemExit) as exit_:
            reproduce(["--manifest", str(manifest), "--out", str(tmp_path / "out"), "--samples", "2000", "--workers", "2"])
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert "broken: the run ended failed (exit status 2) at 0 of 2,000 samples" in err
        assert "latent_dim" in err.partition("broken: the run ended failed")[2]  # the log's tail says why
        assert "1 of 2 run(s) done" in err and "not done: broken" in err
        states = [line.split()[1] for line in status_table(
            [sweep.Plan(spec, 2000, tmp_path / "out", 1, 1) for spec in sweep.load_manifest(manifest)]).splitlines()[1:]]
        assert states == ["done", "failed"]
        # asked about a larger budget, the finished run is one that ended short of it, not a stopped one
        states = [line.split()[1:3] for line in status_table(
            [sweep.Plan(spec, 4000, tmp_path / "out", 1, 1) for spec in sweep.load_manifest(manifest)]).splitlines()[1:]]
        assert states == [["ended", "short"], ["failed", "0"]]

    def test_a_preemption_signal_stops_the_slurm_child_with_its_checkpoint(self, tmp_path, data_dir, monkeypatch):
        """The run's process as a SLURM array task starts it (the job's SLURM_* variables set, the
        job's working folder shared): it does not see SLURM (Lightning would requeue and write
        hpc_ckpt files), and the pre-emption signal (SIGUSR2, submitit's) stops it at a step
        with the run's own checkpoint, from which the requeued job continues."""
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        slurm = {"SLURM_JOB_ID": "1234", "SLURM_ARRAY_JOB_ID": "1233", "SLURM_ARRAY_TASK_ID": "0", "SLURM_NTASKS": "1",
                 "SLURM_JOB_NAME": "lit-vae", "SLURM_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
        for key, value in slurm.items():
            monkeypatch.setenv(key, value)
        job = tmp_path / "job"
        job.mkdir()
        monkeypatch.chdir(job)
        plan = sweep.Plan(sweep.load_manifest(_tiny_manifest(tmp_path))[0], 200_000, tmp_path / "out", 1, 1)
        held = launch.claim(plan)
        process = launch.start(plan)
        try:
            deadline = time.monotonic() + 120
            while (fit := plan.versions.newest_fit()) is None or not (fit.progress() or {}).get("samples_evaluated"):
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
            environment = (Path("/proc") / str(process.pid) / "environ").read_bytes().split(b"\0")
            assert not [item for item in environment if item.startswith(b"SLURM_")]
            process.send_signal(signal.SIGUSR2)
            assert process.wait(timeout=120) == 128 + signal.SIGUSR2
        finally:
            held.close()
        state = sweep.status(plan)
        assert state.state == "stopped" and 0 < state.samples < plan.samples
        assert "stopped by SIGUSR2" in (plan.root / sweep.LOG).read_text()
        assert list(job.iterdir()) == []  # nothing written outside the run folder
        assert "--ckpt_path=last" in plan.command()  # the requeued job continues from it

    def test_submitit_local_executor_runs_two_runs(self, tmp_path, data_dir, monkeypatch):
        """The SLURM launcher's code path, on submitit's local executor (no cluster)."""
        pytest.importorskip("submitit")
        monkeypatch.setenv("LIT_VAE_DATA_DIR", str(data_dir))
        specs = sweep.load_manifest(_tiny_manifest(tmp_path))
        plans = [sweep.Plan(spec, 5_000, tmp_path / "out", 1, 1) for spec in specs]
        jobs = launch.submit_slurm(plans, tmp_path / "slurm", partition=None, time_minutes=10, cpus=1, cluster="local")
        assert len(jobs) == 2
        assert [job.result() for job in jobs] == ["done", "done"]
        for plan in plans:
            assert sweep.status(plan).state == "done" and sweep.status(plan).samples == 5_000
        assert launch.submit_slurm(plans, tmp_path / "slurm", None, 10, 1, cluster="local") == []  # nothing left to do


def _tiny_manifest(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path
