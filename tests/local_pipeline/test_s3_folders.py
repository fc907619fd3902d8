"""Every local copy of S3 keys stays inside its target folder; a key that would leave it is refused, named."""

import boto3
import pytest
from moto import mock_aws

from local_pipeline.s3_folders import UnsafeKeyError, contained_path, download_manifest, download_prefix

TRAVERSAL = "uploads/esc/../../../pwned/x.jpg"


@pytest.mark.parametrize(
    "name",
    [
        "../x.jpg",
        "a/../../x.jpg",
        "a/../b.jpg",  # stays inside once normalised, but a key is data, never a path to normalise
        "..",
        "/etc/passwd",
        "",
        "a\\..\\x.jpg",
        "a\x00.jpg",
    ],
)
def test_names_that_could_leave_the_target_are_refused(tmp_path, name):
    with pytest.raises(UnsafeKeyError):
        contained_path(tmp_path / "target", name)


def test_names_inside_the_target_are_joined(tmp_path):
    root = tmp_path / "target"
    assert contained_path(root, "my dog (1).jpg") == root / "my dog (1).jpg"
    assert contained_path(root, "sub/./b.jpg") == root / "sub" / "b.jpg"
    assert contained_path(root, "..hidden/x..jpg") == root / "..hidden" / "x..jpg"


def test_a_symbolic_link_out_of_the_target_is_refused(tmp_path):
    root = tmp_path / "target"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafeKeyError, match="outside"):
        contained_path(root, "out/x.jpg")


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        yield client


def test_download_refuses_a_traversal_key_and_copies_the_rest(s3, tmp_path):
    s3.put_object(Bucket="bkt", Key="uploads/esc/a.jpg", Body=b"a")
    s3.put_object(Bucket="bkt", Key=TRAVERSAL, Body=b"evil")
    s3.put_object(Bucket="bkt", Key="uploads/esc/sub/../../b.jpg", Body=b"evil")
    target = tmp_path / "work" / "deep" / "target"

    download = download_prefix(s3, "s3://bkt/uploads/esc/", target)

    assert download.files == [target / "a.jpg"]
    assert sorted(item.key for item in download.refused) == sorted([TRAVERSAL, "uploads/esc/sub/../../b.jpg"])
    assert all(TRAVERSAL in line or "sub/../../b.jpg" in line for line in download.describe_refused())
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["work/deep/target/a.jpg"], "nothing lands outside the target"


def test_a_manifest_channel_copies_exactly_its_entries_and_refuses_traversal(s3, tmp_path):
    for key in ["uploads/rex/a.jpg", "uploads/rex/b.jpg", "uploads/rex/late.jpg", "pwned.jpg"]:
        s3.put_object(Bucket="bkt", Key=key, Body=key.encode())
    manifest = [{"prefix": "s3://bkt/uploads/rex/"}, "a.jpg", "b.jpg", "../../pwned.jpg"]
    target = tmp_path / "images"

    download = download_manifest(s3, manifest, target)

    assert download.files == [target / "a.jpg", target / "b.jpg"], "late.jpg is not in the manifest"
    assert [item.key for item in download.refused] == ["uploads/rex/../../pwned.jpg"]
    assert (target / "b.jpg").read_bytes() == b"uploads/rex/b.jpg"
    with pytest.raises(ValueError, match="prefix"):
        download_manifest(s3, ["a.jpg"], target)
