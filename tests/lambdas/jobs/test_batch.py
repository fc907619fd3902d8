import pytest

from lambdas.jobs.batch import BATCH, ListedObject, check_sizes, sort_batch, validate_batch
from lambdas.jobs.image_headers import ImageHeader
from lambdas.jobs.spec import JobDefaults

BUCKET = "data-bucket"
OUTPUT = "s3://data-bucket/models/rex/20261124-101500-ab12/"
DEFAULTS = JobDefaults(min_images=2, max_images=4, max_image_bytes=10_000, min_image_side=64)
GOOD = ImageHeader("jpeg", 640, 480)


def listing(*keys_and_sizes):
    return [ListedObject(key, size) for key, size in keys_and_sizes]


def judge(objects, headers, spec_text=None, defaults=DEFAULTS):
    contents = sort_batch("rex", objects)
    readable, size_problems = check_sizes(contents, defaults)
    return validate_batch(
        contents,
        size_problems=size_problems,
        headers={o.key: headers.get(o.key, GOOD) for o in readable},
        spec_text=spec_text,
        defaults=defaults,
        model_output_s3_uri=OUTPUT,
        bucket=BUCKET,
    )


def test_listing_is_sorted_into_images_captions_spec_and_clutter():
    contents = sort_batch(
        "rex",
        listing(
            ("uploads/rex/b.jpg", 10),
            ("uploads/rex/a.png", 10),
            ("uploads/rex/a.png.txt", 3),
            ("uploads/rex/job.json", 5),
            ("uploads/rex/.DS_Store", 5),
            ("uploads/rex/sub/", 0),
            ("uploads/rex/sub/c.webp", 10),
            ("uploads/rex/sub/job.json", 5),
            ("uploads/rexy/other.jpg", 10),
        ),
    )
    assert [o.key for o in contents.candidates] == [
        "uploads/rex/a.png",
        "uploads/rex/b.jpg",
        "uploads/rex/sub/c.webp",
        "uploads/rex/sub/job.json",
    ]
    assert contents.captions == ("a.png.txt",)
    assert contents.spec.key == "uploads/rex/job.json"
    assert set(contents.ignored) == {".DS_Store", "sub/"}


def test_a_good_batch_resolves_its_job():
    report = judge(
        listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100)), {}, '{"class_word": "dog"}'
    )
    assert report.valid
    assert report.images == ("a.jpg", "b.jpg")
    assert report.job.instance_prompt == "a photo of sks dog"


def test_every_problem_is_reported_with_its_file():
    objects = listing(
        ("uploads/rex/empty.jpg", 0),
        ("uploads/rex/huge.jpg", 20_000),
        ("uploads/rex/notes.pdf", 100),
        ("uploads/rex/tiny.png", 100),
        ("uploads/rex/ok.jpg", 100),
    )
    headers = {
        "uploads/rex/notes.pdf": "not a JPEG, PNG, WebP, GIF or BMP image (looks like text)",
        "uploads/rex/tiny.png": ImageHeader("png", 32, 32),
    }
    report = judge(objects, headers, '{"training_method": "dreams"}')
    assert not report.valid
    by_file = {p.file: p.problem for p in report.problems}
    assert "empty" in by_file["empty.jpg"]
    assert "larger than the" in by_file["huge.jpg"]
    assert "looks like text" in by_file["notes.pdf"]
    assert "32x32 px is too small" in by_file["tiny.png"]
    assert "1 usable image(s) under uploads/rex/; at least 2" in by_file[BATCH]
    assert by_file["job.json"].startswith("job.json: training_method:")
    assert "ok.jpg" not in by_file


def test_too_many_images_is_a_batch_problem():
    objects = listing(*[(f"uploads/rex/{i}.jpg", 100) for i in range(5)])
    assert [p.file for p in judge(objects, {}).problems] == [BATCH]


def test_hyperparameter_overrides_are_checked_by_the_trainer_schema():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, '{"hyperparameters": {"lerning_rate": 0.001}}')
    assert not report.valid
    assert "did you mean 'learning_rate'" in report.problems[0].problem


@pytest.mark.parametrize(
    ("base_model", "ok"),
    [
        ("s3://data-bucket/base-models/sd15/", True),
        ("s3://data-bucket/uploads/x/model.safetensors", False),
        ("s3://other-bucket/base-models/sd15/", False),
        ("runwayml/stable-diffusion-v1-5", True),
    ],
)
def test_s3_base_models_must_be_where_training_jobs_may_read(base_model, ok):
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, f'{{"base_model": "{base_model}"}}')
    assert report.valid is ok
    if not ok:
        assert "s3://data-bucket/base-models/" in report.problems[0].problem
