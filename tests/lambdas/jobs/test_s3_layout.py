import pytest

from lambdas.jobs import s3_layout


def test_prefixes_follow_the_documented_layout():
    assert s3_layout.upload_prefix("my dog") == "uploads/my dog/"
    assert s3_layout.job_spec_key("my dog") == "uploads/my dog/job.json"
    assert s3_layout.model_prefix("rex", "20261124-101500-ab12") == "models/rex/20261124-101500-ab12/"
    assert s3_layout.samples_prefix("rex", "r1") == "models/rex/r1/samples/"
    assert s3_layout.checkpoint_prefix("rex", "r1") == "checkpoints/rex/r1/"
    assert s3_layout.training_images_prefix("my dog", "r1") == "training-input/my dog/r1/images/"
    assert s3_layout.sealed_listing_key("rex", "r1") == "training-input/rex/r1/sealed.json"
    assert s3_layout.accepted_listing_key("rex", "r1") == "training-input/rex/r1/batch.json"
    assert s3_layout.sagemaker_output_prefix("rex", "r1") == "sagemaker-output/rex/r1/"


@pytest.mark.parametrize(
    ("relative", "unsafe"),
    [
        ("a.jpg", False),
        ("sub/a..b.jpg", False),
        ("..", True),
        ("../x.jpg", True),
        ("sub/../../x.jpg", True),
        ("./x.jpg", True),
        ("a//b.jpg", True),
        ("/x.jpg", True),
    ],
)
def test_keys_with_dot_segments_are_data_never_a_path(relative, unsafe):
    assert (s3_layout.unsafe_path_problem(relative) is not None) is unsafe


@pytest.mark.parametrize("bad", ["", "a/b", ".", ".."])
def test_job_and_run_segments_cannot_escape_their_folder(bad):
    with pytest.raises(ValueError, match="contain no '/'"):
        s3_layout.upload_prefix(bad)
    with pytest.raises(ValueError):
        s3_layout.model_prefix("rex", bad)
    with pytest.raises(ValueError):
        s3_layout.training_images_prefix(bad, "r1")
    with pytest.raises(ValueError):
        s3_layout.sagemaker_output_prefix(bad, "r1")


def test_class_images_are_shared_by_what_determines_them():
    a = s3_layout.class_images_prefix("a photo of a dog", "sd15", 512)
    assert a == s3_layout.class_images_prefix("  a photo of a dog ", "sd15", 512)
    assert a.startswith("class-images/") and a.endswith("/")
    assert a != s3_layout.class_images_prefix("a photo of a dog", "sd15", 768)
    assert a != s3_layout.class_images_prefix("a photo of a cat", "sd15", 512)
    assert a != s3_layout.class_images_prefix("a photo of a dog", "sd21", 512)


def test_s3_uris_round_trip_and_bad_ones_are_named():
    assert s3_layout.s3_uri("b", "models/x/") == "s3://b/models/x/"
    assert s3_layout.split_s3_uri("s3://b/models/x/") == ("b", "models/x/")
    assert s3_layout.split_s3_uri("s3://b") == ("b", "")
    for bad in ["https://b/k", "s3://", "b/k"]:
        with pytest.raises(ValueError, match="not an s3:// URI"):
            s3_layout.split_s3_uri(bad)


@pytest.mark.parametrize(
    ("raw", "job", "relative"),
    [
        ("uploads/my+dog/IMG_0001.jpg", "my dog", "IMG_0001.jpg"),
        ("uploads%2Frex%2Fa.png", "rex", "a.png"),
        ("uploads/caf%C3%A9/photo+1.jpeg", "café", "photo 1.jpeg"),
        ("uploads/a%2Bb/x.jpg", "a+b", "x.jpg"),
        ("uploads/rex/nested/deeper/x.jpg", "rex", "nested/deeper/x.jpg"),
        ("uploads/rex/job.json", "rex", "job.json"),
    ],
)
def test_event_keys_decode_to_job_and_relative_path(raw, job, relative):
    uploaded = s3_layout.parse_upload_key(s3_layout.decode_event_key(raw))
    assert uploaded == s3_layout.UploadedObject(job_name=job, relative_path=relative)


@pytest.mark.parametrize("key", ["models/rex/a.jpg", "upload/rex/a.jpg", "class-images/x/1.png"])
def test_keys_outside_a_job_upload_folder_are_not_uploads(key):
    assert s3_layout.parse_upload_key(key) is None


@pytest.mark.parametrize(
    ("key", "relative", "ignored"),
    [("uploads//a.jpg", "a.jpg", False), ("uploads/a.jpg", "a.jpg", False), ("uploads/", "", True)],
)
def test_uploads_without_a_job_folder_belong_to_the_empty_job_name(key, relative, ignored):
    uploaded = s3_layout.parse_upload_key(key)
    assert uploaded == s3_layout.UploadedObject(job_name="", relative_path=relative)
    assert uploaded.is_ignored is ignored


@pytest.mark.parametrize(
    ("relative", "ignored"),
    [
        ("", True),
        ("sub/", True),
        (".DS_Store", True),
        ("sub/Thumbs.db", True),
        (".hidden.jpg", True),
        ("photo.jpg", False),
        ("sub/photo.jpg", False),
    ],
)
def test_placeholders_and_desktop_clutter_are_ignored(relative, ignored):
    assert s3_layout.UploadedObject("rex", relative).is_ignored is ignored


def test_only_the_top_level_job_json_is_the_job_spec():
    assert s3_layout.UploadedObject("rex", "job.json").is_job_spec
    assert not s3_layout.UploadedObject("rex", "sub/job.json").is_job_spec
