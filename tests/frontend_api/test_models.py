import pytest
from pydantic import ValidationError

from frontend_api.models import CreateJobRequest
from lambdas.jobs.spec import JobSpec

IMAGE = {"filename": "a.jpg", "content_type": "image/jpeg"}


def test_the_create_request_is_the_job_spec_plus_api_fields():
    assert set(JobSpec.model_fields) < set(CreateJobRequest.model_fields)
    request = CreateJobRequest.model_validate(
        {"images": [IMAGE], "class_word": "dog", "max_train_steps": 100, "job_name": "My Dog"}
    )
    assert request.job_spec() == JobSpec(class_word="dog", max_train_steps=100)
    assert request.job_spec().model_dump(exclude_unset=True) == {"class_word": "dog", "max_train_steps": 100}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"images": [IMAGE], "nope": 1}, "nope"),
        ({"images": [IMAGE], "max_train_steps": -5}, "max_train_steps"),
        ({"images": [IMAGE], "max_train_steps": 10**12}, "max_train_steps"),
        ({"images": [IMAGE], "max_train_steps": "many"}, "max_train_steps"),
        ({"images": [{"filename": "../x.jpg", "content_type": "image/jpeg"}]}, "images.0.filename"),
        ({"images": [{"filename": "x.jpg", "content_type": "text/html"}]}, "images.0.content_type"),
        ({"images": [IMAGE], "job_name": "../etc"}, "job_name"),
        ({"images": [IMAGE], "job_name": ".."}, "job_name"),
        ({"images": [IMAGE], "job_name": "a\nb"}, "job_name"),
        ({"images": [IMAGE], "webhook_url": "ftp://x"}, "webhook_url"),
        ({"images": [IMAGE, IMAGE]}, "(root)"),
        ({}, "(root)"),
        ({"images": [IMAGE], "images_url": "https://example.com/a.zip"}, "(root)"),
        ({"images": [{"filename": "job.json", "content_type": "image/jpeg"}]}, "images.0.filename"),
    ],
)
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        CreateJobRequest.model_validate(body)
    locations = {".".join(str(p) for p in e["loc"]) or "(root)" for e in caught.value.errors()}
    assert field in locations
