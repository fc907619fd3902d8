import json

import pytest

from lambdas.jobs.batch import (
    BATCH,
    ListedObject,
    Problem,
    accepted_listing_json,
    check_sizes,
    parse_sealed_listing,
    sealed_listing_json,
    sort_batch,
    validate_batch,
)
from lambdas.jobs.limits import ServiceLimits
from lambdas.jobs.spec import JobDefaults

BUCKET = "data-bucket"
OUTPUT = "s3://data-bucket/models/rex/20261124-101500-ab12/"
DEFAULTS = JobDefaults(min_images=2, max_image_bytes=10_000, min_image_side=64)
LIMITS = ServiceLimits(max_images=4)


def listing(*keys_and_sizes):
    return [ListedObject(key, size, '"etag"') for key, size in keys_and_sizes]


def judge(objects, unusable=None, spec_text=None, defaults=DEFAULTS, limits=LIMITS):
    """``unusable``: relative name -> reason, as the adapter's decode would report; the rest decode."""
    unusable = unusable or {}
    contents = sort_batch("rex", objects)
    readable, skipped = check_sizes(contents, defaults)
    accepted = []
    for obj in readable:
        name = contents.relative(obj.key)
        if name in unusable:
            skipped.append(Problem(name, unusable[name]))
        else:
            accepted.append(name)
    return validate_batch(
        contents,
        accepted=accepted,
        skipped=skipped,
        spec_text=spec_text,
        defaults=defaults,
        limits=limits,
        model_output_s3_uri=OUTPUT,
        bucket=BUCKET,
    )


def test_listing_is_sorted_into_images_captions_spec_clutter_and_refused_keys():
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
            ("uploads/rex/../../../pwned/x.jpg", 10),
            ("uploads/rex/a//b.jpg", 10),
            ("uploads/rex/" + "n" * 256 + ".jpg", 10),
            ("uploads/rexy/other.jpg", 10),
        ),
    )
    assert [o.key for o in contents.candidates] == [
        "uploads/rex/a.png",
        "uploads/rex/b.jpg",
        "uploads/rex/sub/c.webp",
        "uploads/rex/sub/job.json",
    ]
    assert [o.key for o in contents.captions] == ["uploads/rex/a.png.txt"]
    assert contents.spec.key == "uploads/rex/job.json"
    assert set(contents.ignored) == {".DS_Store", "sub/"}
    refused = {p.file: p.problem for p in contents.refused}
    assert "'..' folder" in refused["../../../pwned/x.jpg"]
    assert "empty folder name" in refused["a//b.jpg"]
    assert "260 bytes long" in refused["n" * 256 + ".jpg"]


def test_the_sealed_listing_round_trips_with_etags():
    objects = [ListedObject("uploads/rex/ä.jpg", 3, '"abc"')]
    assert parse_sealed_listing(sealed_listing_json(objects).encode()) == objects


def test_a_good_batch_resolves_its_job():
    report = judge(
        listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100)), {}, '{"class_word": "dog"}'
    )
    assert report.valid
    assert report.images == ("a.jpg", "b.jpg")
    assert report.job.instance_prompt == "a photo of sks dog"
    assert report.job.strict_images is False


def test_unusable_files_are_skipped_and_named_and_the_rest_trains():
    objects = listing(
        ("uploads/rex/empty.jpg", 0),
        ("uploads/rex/huge.jpg", 20_000),
        ("uploads/rex/notes.png", 100),
        ("uploads/rex/ok1.jpg", 100),
        ("uploads/rex/ok2.jpg", 100),
        ("uploads/rex/../x.jpg", 100),
        ("uploads/rex/Thumbs.db", 100),
    )
    report = judge(objects, {"notes.png": "not a JPEG, PNG, WebP, GIF or BMP image (looks like text)"})
    assert report.valid
    assert report.images == ("ok1.jpg", "ok2.jpg")
    skipped = {p.file: p.problem for p in report.skipped}
    assert set(skipped) == {"empty.jpg", "huge.jpg", "notes.png", "../x.jpg"}
    assert "empty" in skipped["empty.jpg"]
    assert "larger than the" in skipped["huge.jpg"]
    assert "looks like text" in skipped["notes.png"]
    assert report.ignored == ("Thumbs.db",)


def test_too_few_usable_photos_fail_and_name_every_skipped_file():
    objects = listing(("uploads/rex/ok.jpg", 100), ("uploads/rex/bad.jpg", 100))
    report = judge(objects, {"bad.jpg": "cannot decode (OSError: image file is truncated)"})
    assert not report.valid
    by_file = {p.file: p.problem for p in report.problems}
    assert "1 usable image(s) under uploads/rex/; at least 2 are needed (1 file(s) skipped" in by_file[BATCH]
    assert "truncated" in by_file["bad.jpg"]


def test_strict_images_keeps_all_or_nothing():
    objects = listing(*[(f"uploads/rex/{i}.jpg", 100) for i in range(3)])
    report = judge(objects, {"2.jpg": "not an image PIL can read"}, '{"strict_images": true}')
    assert not report.valid
    by_file = {p.file: p.problem for p in report.problems}
    assert '"strict_images": true' in by_file[BATCH]
    assert by_file["2.jpg"] == "not an image PIL can read"
    assert judge(objects, {"2.jpg": "not an image PIL can read"}).valid


def test_a_wrong_job_json_fails_the_batch_with_its_fields():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, '{"training_method": "dreams"}')
    assert [p.file for p in report.problems] == ["job.json"]
    assert report.problems[0].problem.startswith("job.json: training_method:")


def test_too_many_images_names_the_limit_and_its_context_key():
    objects = listing(*[(f"uploads/rex/{i}.jpg", 100) for i in range(5)])
    (problem,) = judge(objects).problems
    assert problem.file == BATCH
    assert "at most 4 per batch" in problem.problem and "'limit_max_images'" in problem.problem


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"instance_type": "ml.p5.48xlarge"}, ["ml.p5.48xlarge is not allowed", "'limit_instance_types'"]),
        (
            {"max_runtime_seconds": 28 * 24 * 3600},
            ["2419200 is over", "limit of 14400", "'limit_max_runtime_seconds'"],
        ),
        ({"max_train_steps": 20_000}, ["max_train_steps 20000", "'limit_max_train_steps'"]),
        (
            {"hyperparameters": {"resolution": 2048}},
            ["resolution 2048", "limit of 1024", "'limit_max_resolution'"],
        ),
    ],
)
def test_a_job_over_a_limit_fails_naming_the_limit_and_its_context_key(spec, words):
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, json.dumps(spec))
    assert not report.valid
    (problem,) = report.problems
    assert problem.file == "job.json"
    for word in words:
        assert word in problem.problem


def test_limits_raised_by_the_operator_let_the_same_job_through():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    raised = ServiceLimits(instance_types=("ml.p5.48xlarge",), max_runtime_seconds=28 * 24 * 3600)
    spec = '{"instance_type": "ml.p5.48xlarge", "max_runtime_seconds": 2419200}'
    assert judge(objects, {}, spec, limits=raised).valid


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
        ("s3://data-bucket/base-models/../uploads/x/", False),
        ("runwayml/stable-diffusion-v1-5", True),
        ("../../etc", False),
        ("/opt/ml/input/data/model", False),
        ("./models/sd", False),
        ("sd15", True),  # an alias of the family table
        ("my-sd15", False),
    ],
)
def test_base_model_is_a_hugging_face_id_or_a_folder_under_base_models(base_model, ok):
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, json.dumps({"base_model": base_model}))
    assert report.valid is ok
    if not ok:
        (problem,) = report.problems
        assert problem.problem.startswith("job.json: base_model:")
        assert "s3://data-bucket/base-models/" in problem.problem


def test_the_accepted_listing_names_exactly_what_trains_with_etags():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100), ("uploads/rex/c.jpg", 100))
    objects.append(ListedObject("uploads/rex/a.jpg.txt", 5, '"cap"'))
    contents = sort_batch("rex", objects)
    report = judge(objects, {"c.jpg": "not an image PIL can read"})
    written = json.loads(
        accepted_listing_json(contents, report, training_images_uri="s3://b/training-input/x/")
    )
    assert written["accepted"] == [
        {"key": "uploads/rex/a.jpg", "etag": '"etag"', "size": 100},
        {"key": "uploads/rex/b.jpg", "etag": '"etag"', "size": 100},
    ]
    assert written["captions"] == [{"key": "uploads/rex/a.jpg.txt", "etag": '"cap"', "size": 5}]
    assert written["skipped"] == [{"file": "c.jpg", "problem": "not an image PIL can read"}]


def test_a_full_fine_tune_of_sdxl_fails_validation_naming_the_family():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, json.dumps({"base_model": "sdxl", "training_method": "full"}))
    assert not report.valid
    assert [p.problem for p in report.problems] == [
        'job.json: training_method "full": sdxl (Stable Diffusion XL) base models train lora only; set '
        '"training_method": "lora" or leave it out'
    ]


def test_flux1_dev_on_a_t4_fails_validation_naming_instance_types_that_work():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(objects, {}, json.dumps({"base_model": "flux1-dev", "instance_type": "ml.g4dn.xlarge"}))
    assert not report.valid
    (problem,) = report.problems
    assert "flux (FLUX.1) trains in bf16" in problem.problem and "ml.g5.xlarge" in problem.problem
    assert judge(objects, {}, json.dumps({"base_model": "flux1-dev"})).job.instance_type == "ml.g6.xlarge"


def test_a_family_given_by_the_caller_wins_over_the_name():
    """The adapter read model_index.json of an s3:// base model: its family decides."""
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    contents = sort_batch("rex", objects)
    report = validate_batch(
        contents,
        accepted=["a.jpg", "b.jpg"],
        skipped=[],
        spec_text=json.dumps({"base_model": "s3://data-bucket/base-models/mine/"}),
        defaults=DEFAULTS,
        limits=LIMITS,
        model_output_s3_uri=OUTPUT,
        bucket=BUCKET,
        family="zimage",
    )
    assert (report.job.family, report.job.instance_type, report.job.training_method) == (
        "zimage",
        "ml.g6.xlarge",
        "lora",
    )


def test_the_familys_default_resolution_counts_against_the_resolution_limit():
    objects = listing(("uploads/rex/a.jpg", 100), ("uploads/rex/b.jpg", 100))
    report = judge(
        objects,
        {},
        json.dumps({"base_model": "sdxl"}),
        limits=ServiceLimits(max_images=4, max_resolution=768),
    )
    assert not report.valid and "resolution 1024 is over" in report.problems[0].problem
