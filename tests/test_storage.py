"""``raydet.storage``: the same calls on a local folder, ``file://`` URIs and S3 (a real S3 HTTP server)."""
from __future__ import annotations

import pytest

from raydet import storage
from raydet.engine.launcher import find_latest_run, latest_checkpoint

BUCKET = "raydet-storage-test"


@pytest.fixture(params=["local", "file_uri", "s3"])
def root(request, tmp_path) -> str:
    """An empty folder on each kind of storage."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "file_uri":
        return f"file://{tmp_path}/root"
    client = request.getfixturevalue("s3_server")
    client.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{tmp_path.name}"


def test_storage_write_read_list_and_missing_files(root):
    path = storage.join(root, "runs", "a", "metrics.json")
    storage.write_text(path, '{"mAP": 0.5}')
    storage.write_bytes(storage.join(root, "runs", "b.bin"), b"\x00\x01")
    assert storage.read_text(path) == '{"mAP": 0.5}'
    assert storage.read_bytes(storage.join(root, "runs", "b.bin")) == b"\x00\x01"
    assert storage.list_dir(storage.join(root, "runs")) == ["a", "b.bin"]
    assert storage.is_dir(storage.join(root, "runs", "a")) and not storage.is_file(storage.join(root, "runs", "a"))
    assert storage.is_file(path) and storage.exists(path) and not storage.is_dir(path)
    missing = storage.join(root, "runs", "nothing.json")
    assert not storage.exists(missing)
    with pytest.raises(FileNotFoundError) as caught:
        storage.read_bytes(missing)
    assert caught.value.filename == missing  # the path as the user gave it
    with pytest.raises(FileNotFoundError):
        storage.list_dir(storage.join(root, "no_folder"))


def test_storage_paths_join_and_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("data/x.json") == str(tmp_path / "data/x.json")
    assert storage.absolute("s3://bucket/x.json") == "s3://bucket/x.json"  # a URI is never a local path
    assert storage.join("s3://bucket/runs", "r1", "checkpoint.pt") == "s3://bucket/runs/r1/checkpoint.pt"
    assert storage.join("/data", "s3://other/x.png") == "s3://other/x.png"
    assert storage.join("data", "/abs/x.png") == "/abs/x.png"
    assert storage.name_of("s3://bucket/runs/r1/") == "r1" and storage.name_of("/a/b/") == "b"


def test_storage_resume_auto_finds_the_newest_run_with_a_checkpoint(root):
    runs = storage.join(root, "runs")
    for run, checkpoints in {"demo-20260101-000000": ["checkpoint_2026-01-01_00-00-01.000001",
                                                      "checkpoint_2026-01-01_00-00-09.000001"],
                             "demo-20260102-000000": [],  # started, never checkpointed
                             "demo-20251231-000000": ["checkpoint_2025-12-31_00-00-01.000001"],
                             "other-20270101-000000": ["checkpoint_2027-01-01_00-00-01.000001"]}.items():
        storage.write_text(storage.join(runs, run, "config.yaml"), "seed: 0")
        for checkpoint in checkpoints:
            storage.write_bytes(storage.join(runs, run, checkpoint, "checkpoint.pt"), b"x")
    storage.write_text(storage.join(runs, "demo-20260103-000000"), "a file, not a run")
    assert find_latest_run(runs, "demo") == "demo-20260101-000000"
    assert latest_checkpoint(storage.join(runs, "demo-20260101-000000")) == storage.join(
        runs, "demo-20260101-000000", "checkpoint_2026-01-01_00-00-09.000001")
    assert find_latest_run(storage.join(root, "nothing"), "demo") is None


def test_storage_unsupported_uri_is_an_os_error():
    with pytest.raises(OSError, match="unsupported storage URI"):
        storage.read_bytes("nosuchscheme://bucket/x.png")


def test_walk_lists_every_file_below_a_folder_sorted(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("z.png", "a/y.jpg", "a/b/x.png"):
        (tmp_path / name).write_bytes(b"x")
    assert storage.walk(tmp_path) == [str(tmp_path / n) for n in ("a/b/x.png", "a/y.jpg", "z.png")]
    with pytest.raises(FileNotFoundError):
        storage.walk(tmp_path / "missing")
