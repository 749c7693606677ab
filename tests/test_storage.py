"""``raydet.storage``: the same calls on a local folder, ``file://`` URIs and S3 (a real S3 HTTP server)."""
from __future__ import annotations

import pytest

from raydet import storage

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
    assert storage.size(path) == len('{"mAP": 0.5}')
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
