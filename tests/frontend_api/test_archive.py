import io
import stat
import zipfile

import pytest

from frontend_api import archive
from frontend_api.errors import ApiError

LIMITS = archive.ArchiveLimits(max_entries=50, max_images=10, max_entry_bytes=4 * 1024 * 1024, max_ratio=100)


def make_zip(entries, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                z.writestr(name, data)
            else:
                z.writestr(name, data)
    buffer.seek(0)
    return zipfile.ZipFile(buffer)


def code_of(entries, limits=LIMITS):
    with pytest.raises(ApiError) as caught:
        archive.plan(make_zip(entries), limits)
    return caught.value.code, caught.value.status


def test_images_and_captions_are_planned_clutter_is_skipped():
    planned = archive.plan(
        make_zip(
            [
                ("a.jpg", b"x" * 10),
                ("sub/b.png", b"y" * 10),
                ("sub/b.txt", b"caption"),
                ("__MACOSX/._a.jpg", b"junk"),
                (".DS_Store", b"junk"),
                ("notes.pdf", b"pdf"),
                ("folder/", b""),
            ]
        ),
        LIMITS,
    )
    assert [name for _, name in planned.entries] == ["a.jpg", "sub/b.png", "sub/b.txt"]
    assert planned.image_count == 2
    assert {s["file"] for s in planned.skipped} == {"__MACOSX/._a.jpg", ".DS_Store", "notes.pdf"}


@pytest.mark.parametrize(
    "name", ["../evil.jpg", "a/../../evil.jpg", "/etc/passwd.jpg", "C:/x.jpg", "a\\..\\b.jpg", "a//b.jpg"]
)
def test_path_tricks_are_unsafe_archive(name):
    assert code_of([("ok.jpg", b"x"), (name, b"x")]) == ("unsafe_archive", 422)


def test_ten_thousand_files_are_refused_before_anything_is_read():
    assert code_of([(f"{i}.jpg", b"") for i in range(10_000)], archive.ArchiveLimits()) == (
        "archive_too_many_files",
        413,
    )


def test_more_images_than_a_job_takes_is_too_many_images():
    assert code_of([(f"{i}.jpg", b"x") for i in range(11)]) == ("too_many_images", 413)


def test_a_highly_compressed_entry_is_a_zip_bomb():
    code, _ = code_of([("bomb.png", b"\0" * (3 * 1024 * 1024))])
    assert code == "unsafe_archive"


def test_an_oversized_entry_is_refused_by_its_declared_size():
    assert code_of([("big.jpg", bytes(range(256)) * (5 * 4096))])[0] == "unsafe_archive"


def test_symlinks_are_refused():
    info = zipfile.ZipInfo("link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    assert code_of([("a.jpg", b"x"), (info, "/etc/passwd")]) == ("unsafe_archive", 422)


def test_an_entry_larger_than_it_declares_is_caught_while_reading():
    zipped = make_zip([("a.jpg", b"x" * 1000)], compression=zipfile.ZIP_STORED)
    info = zipped.infolist()[0]
    info.file_size = 10  # the header lies
    with pytest.raises(ApiError, match="corrupt or larger than it declares"):
        archive.read_entry(zipped, info)


def test_an_archive_without_images_is_no_images():
    assert code_of([("readme.md", b"x")]) == ("no_images", 422)


def test_not_a_zip_is_unsafe_archive():
    with pytest.raises(ApiError) as caught:
        archive.open_archive(io.BytesIO(b"not a zip"))
    assert caught.value.code == "unsafe_archive"
