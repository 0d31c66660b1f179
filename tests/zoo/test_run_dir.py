"""The trainers' out_dir and checkpoint rules (zoo.common.checkpoint): a non-empty out_dir needs --resume or
--overwrite, --resume needs a checkpoint, --overwrite deletes run artifacts only; stale temporaries of
killed writes are removed; a corrupt last.pt falls back to the newest intact numbered checkpoint with a
warning; truncated checkpoints and checkpoints without 'rng' raise ValueError naming the file."""

import pytest
import torch

from wbaug.io_atomic import TEMP_SUFFIX
from zoo.common.checkpoint import (
    CheckpointManager,
    RunDirError,
    load_checkpoint,
    prepare_run_dir,
    read_checkpoint,
    save_checkpoint,
)


def _manager_with_three(tmp_path):
    model = torch.nn.Linear(2, 2)
    mgr = CheckpointManager(tmp_path / "checkpoints", keep=2)
    for step in (5, 10, 15):
        with torch.no_grad():
            model.weight.fill_(step)
        mgr.save(step=step, model=model)
    return mgr, model


def test_new_run_refuses_non_empty_out_dir(tmp_path):
    assert prepare_run_dir(tmp_path / "fresh", resume=False) == tmp_path / "fresh"  # missing: fine
    (tmp_path / "empty").mkdir()
    prepare_run_dir(tmp_path / "empty", resume=False)
    run = tmp_path / "run"
    _manager_with_three(run)
    (run / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="not empty") as info:
        prepare_run_dir(run, resume=False)
    assert str(run) in str(info.value) and "--resume" in str(info.value) and "--overwrite" in str(info.value)
    assert (run / "checkpoints" / "last.pt").exists()  # nothing deleted


def test_overwrite_deletes_run_artifacts_only(tmp_path):
    run = tmp_path / "run"
    _manager_with_three(run)
    (run / "logs").mkdir()
    (run / "logs" / "train.csv").write_text("step,loss\n1,0.5\n")
    (run / "metrics.json").write_text("{}")
    prepare_run_dir(run, resume=False, overwrite=True)
    assert list(run.iterdir()) == []
    _manager_with_three(run)
    (run / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="thesis.tex") as info:
        prepare_run_dir(run, resume=False, overwrite=True)
    assert str(run) in str(info.value)
    assert (run / "thesis.tex").read_text() == "precious" and (run / "checkpoints").is_dir()
    with pytest.raises(RunDirError, match="exclude"):
        prepare_run_dir(run, resume=True, overwrite=True)


@pytest.mark.parametrize("case", ["missing", "empty", "no_checkpoint"])
def test_resume_without_a_checkpoint_fails(tmp_path, case):
    run = tmp_path / "run"
    if case != "missing":
        run.mkdir()
    if case == "no_checkpoint":
        (run / "config.json").write_text("{}")
        (run / "checkpoints").mkdir()
    with pytest.raises(RunDirError, match="--resume") as info:
        prepare_run_dir(run, resume=True)
    assert str(run) in str(info.value)


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    mgr, _ = _manager_with_three(tmp_path)
    d = mgr.directory
    stale = [
        d / f".last.pt.x8Kq2{TEMP_SUFFIX}",
        d / f".step_00000015.pt.abcd{TEMP_SUFFIX}",
        d / ".last.pt.tmp4242",
    ]
    for p in stale:
        p.write_bytes(b"\x00" * 1000)
    (d / "notes.txt").write_text("keep")
    CheckpointManager(d, keep=2)  # a trainer taking over the directory
    assert not any(p.exists() for p in stale)
    assert (d / "notes.txt").exists() and (d / "last.pt").exists()
    (tmp_path / f".config.json.zz{TEMP_SUFFIX}").write_bytes(b"x")
    prepare_run_dir(tmp_path, resume=True)  # --resume cleans out_dir and logs too
    assert not (tmp_path / f".config.json.zz{TEMP_SUFFIX}").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_rng"])
def test_corrupt_last_falls_back_to_newest_intact_numbered(tmp_path, damage):
    mgr, model = _manager_with_three(tmp_path)
    last = mgr.last_path
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:100])
    elif damage == "garbage":
        last.write_bytes(b"\x00" * 64)
    else:
        raw = torch.load(last, weights_only=True)
        del raw["rng"]
        torch.save(raw, last)
    fresh = torch.nn.Linear(2, 2)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint") as record:
        ckpt = mgr.load_latest(model=fresh)
    assert any(str(last) in str(w.message) and "step_00000015.pt" in str(w.message) for w in record)
    assert ckpt["step"] == 15 and ckpt["path"].name == "step_00000015.pt"
    torch.testing.assert_close(fresh.weight, torch.full((2, 2), 15.0))
    # every checkpoint broken: one error listing each file
    for _, p in mgr.numbered():
        p.write_bytes(b"")
    with pytest.raises(ValueError, match="no intact checkpoint") as info:
        mgr.load_latest(model=fresh)
    for _, p in mgr.numbered():
        assert str(p) in str(info.value)


def test_checkpoint_without_rng_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=torch.nn.Linear(2, 2), step=3)
    raw = torch.load(path, weights_only=True)
    del raw["rng"]
    torch.save(raw, path)
    with pytest.raises(ValueError, match="no 'rng' entry") as info:
        load_checkpoint(path, model=torch.nn.Linear(2, 2))
    assert str(path) in str(info.value)
    assert load_checkpoint(path, model=torch.nn.Linear(2, 2), restore_rng=False)["step"] == 3


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_checkpoint_names_the_file(tmp_path, keep):
    path = save_checkpoint(tmp_path / "c.pt", model=torch.nn.Linear(4, 4), step=1)
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data))])
    model = torch.nn.Linear(4, 4)
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match="cannot read the checkpoint") as info:
        load_checkpoint(path, model=model)
    assert str(path) in str(info.value)
    torch.testing.assert_close(model.weight, before)  # nothing restored from a bad file
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


def test_trainer_cli_applies_the_rules_before_any_work(tmp_path, capsys):
    """`python -m zoo.barycenter_net.train`: a non-empty out_dir without flags and --resume on a missing
    directory exit with status 2 naming the directory, before data are built (fast)."""
    from zoo.barycenter_net.train import main as train_main

    run = tmp_path / "run"
    _manager_with_three(run)
    with pytest.raises(SystemExit) as info:
        train_main(["--preset", "smoke", "--train.out_dir", str(run)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(run) in err and "not empty" in err
    with pytest.raises(SystemExit) as info:
        train_main(["--preset", "smoke", "--train.out_dir", str(tmp_path / "typo"), "--resume"])
    assert info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--preset", "smoke", "--train.out_dir", str(run), "--resume", "--overwrite"])
