"""The API's items in the jobs table, next to the pipeline's (layout in lambdas/jobs/batch_state.py).

Additive items only; the pipeline's BATCH/RUN/SEEN items are read, never written, except RUN on stop:

- ``APIJOB#<id>`` / ``API``: the job as created through the API (owner, name, spec, webhook, images).
- ``JOB#<job name>`` / ``API``: the name's claim, so two jobs never share an upload folder.
- ``OWNER#<owner>`` / ``JOB#<created ms>#<id>``: one entry per job, newest first by sort key (listing).
- ``IDEMP#<hash of owner and key>`` / ``IDEMP``: an Idempotency-Key's job and body fingerprint (TTL 24 h).

A create writes all of them in one transaction, conditional on none existing (and on the name having
no S3-drop batch either), so a retried or concurrent create can never make two jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from frontend_api import idempotency
from lambdas.jobs import batch_state as bs

API_SK = "API"
IDEMP_SK = "IDEMP"
LIST_PREFIX = "JOB#"


def api_pk(job_id: str) -> str:
    return f"APIJOB#{job_id}"


def owner_pk(owner: str) -> str:
    return f"OWNER#{owner}"


def list_sk(created_at_ms: int, job_id: str) -> str:
    return f"{LIST_PREFIX}{created_at_ms:013d}#{job_id}"


@dataclass
class ApiJob:
    id: str
    job_name: str
    owner: str
    created_at_ms: int
    spec: dict[str, Any]
    fingerprint: str
    webhook_url: str | None = None
    images: list[dict[str, str]] = field(default_factory=list)
    images_url: str | list[str] | None = None
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    purged: bool = False

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _s(api_pk(self.id)),
            "sk": _s(API_SK),
            "id": _s(self.id),
            "job_name": _s(self.job_name),
            "owner": _s(self.owner),
            "created_at_ms": _n(self.created_at_ms),
            "spec_json": _s(json.dumps(self.spec, sort_keys=True)),
            "images_json": _s(json.dumps(self.images)),
            "fingerprint": _s(self.fingerprint),
            "purged": {"BOOL": self.purged},
        }
        if self.webhook_url:
            item["webhook_url"] = _s(self.webhook_url)
        if self.images_url is not None:
            item["images_url_json"] = _s(json.dumps(self.images_url))
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ApiJob:
        return cls(
            id=item["id"]["S"],
            job_name=item["job_name"]["S"],
            owner=item["owner"]["S"],
            created_at_ms=int(item["created_at_ms"]["N"]),
            spec=json.loads(item["spec_json"]["S"]),
            fingerprint=item["fingerprint"]["S"],
            webhook_url=item.get("webhook_url", {}).get("S"),
            images=json.loads(item["images_json"]["S"]),
            images_url=json.loads(item["images_url_json"]["S"]) if "images_url_json" in item else None,
            started_at_ms=int(item["started_at_ms"]["N"]) if "started_at_ms" in item else None,
            stopped_at_ms=int(item["stopped_at_ms"]["N"]) if "stopped_at_ms" in item else None,
            purged=item.get("purged", {}).get("BOOL", False),
        )


class NameTaken(Exception):
    pass


@dataclass(frozen=True)
class KeyReused:
    """The Idempotency-Key already names a job: the same one when ``same_body``."""

    job_id: str
    same_body: bool


class IdempotencyConflict(Exception):
    def __init__(self, reuse: KeyReused) -> None:
        super().__init__(reuse.job_id)
        self.reuse = reuse


class ApiStore:
    def __init__(self, table_name: str, dynamodb: Any) -> None:
        self.name = table_name
        self.db = dynamodb

    def create(self, job: ApiJob, *, idempotency_key: str | None, now_s: int) -> None:
        """NameTaken, IdempotencyConflict, or the job and its claims, all written at once."""
        new = "attribute_not_exists(pk)"
        items: list[dict[str, Any]] = []
        if idempotency_key is not None:
            items.append(
                {
                    "Put": {
                        "TableName": self.name,
                        "Item": {
                            "pk": _s(idempotency.record_key(job.owner, idempotency_key)),
                            "sk": _s(IDEMP_SK),
                            "job_id": _s(job.id),
                            "fingerprint": _s(job.fingerprint),
                            "expires_at": _n(now_s + idempotency.RETENTION_SECONDS),
                        },
                        "ConditionExpression": new,
                    }
                }
            )
        items += [
            {"Put": {"TableName": self.name, "Item": job.item(), "ConditionExpression": new}},
            {
                "Put": {
                    "TableName": self.name,
                    "Item": {"pk": _s(bs.job_pk(job.job_name)), "sk": _s(API_SK), "job_id": _s(job.id)},
                    "ConditionExpression": new,
                }
            },
            {
                "ConditionCheck": {
                    "TableName": self.name,
                    "Key": {"pk": _s(bs.job_pk(job.job_name)), "sk": _s(bs.BATCH_SK)},
                    "ConditionExpression": new,
                }
            },
            {
                "Put": {
                    "TableName": self.name,
                    "Item": {
                        "pk": _s(owner_pk(job.owner)),
                        "sk": _s(list_sk(job.created_at_ms, job.id)),
                        "job_id": _s(job.id),
                    },
                    "ConditionExpression": new,
                }
            },
        ]
        try:
            self.db.transact_write_items(TransactItems=items)
        except self.db.exceptions.TransactionCanceledException as err:
            reasons = [r.get("Code", "None") for r in err.response.get("CancellationReasons", [])]
            if idempotency_key is not None and reasons and reasons[0] == "ConditionalCheckFailed":
                reuse = self.idempotent_job(job.owner, idempotency_key, job.fingerprint)
                if reuse is not None:
                    raise IdempotencyConflict(reuse) from None
            if "ConditionalCheckFailed" in reasons:
                raise NameTaken(job.job_name) from None
            raise

    def idempotent_job(self, owner: str, key: str, fingerprint: str) -> KeyReused | None:
        item = self.db.get_item(
            TableName=self.name,
            Key={"pk": _s(idempotency.record_key(owner, key)), "sk": _s(IDEMP_SK)},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return None
        return KeyReused(item["job_id"]["S"], item["fingerprint"]["S"] == fingerprint)

    def get(self, job_id: str) -> ApiJob | None:
        item = self.db.get_item(
            TableName=self.name, Key={"pk": _s(api_pk(job_id)), "sk": _s(API_SK)}, ConsistentRead=True
        ).get("Item")
        return ApiJob.from_item(item) if item else None

    def job_id_for_name(self, job_name: str) -> str | None:
        item = self.db.get_item(
            TableName=self.name, Key={"pk": _s(bs.job_pk(job_name)), "sk": _s(API_SK)}
        ).get("Item")
        return item["job_id"]["S"] if item else None

    def mark(self, job_id: str, **values: int | bool) -> None:
        sets, attrs = [], {}
        for index, (name, value) in enumerate(sorted(values.items())):
            sets.append(f"{name} = :v{index}")
            attrs[f":v{index}"] = {"BOOL": value} if isinstance(value, bool) else _n(value)
        self.db.update_item(
            TableName=self.name,
            Key={"pk": _s(api_pk(job_id)), "sk": _s(API_SK)},
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=attrs,
        )

    def mark_started_once(self, job_id: str, now_ms: int) -> bool:
        """False when start was already called."""
        try:
            self.db.update_item(
                TableName=self.name,
                Key={"pk": _s(api_pk(job_id)), "sk": _s(API_SK)},
                UpdateExpression="SET started_at_ms = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(started_at_ms)",
                ExpressionAttributeValues={":now": _n(now_ms)},
            )
        except self.db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def list_page(self, owner: str, *, after: str | None, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """(list sort key, job id) newest first, up to ``limit``, and whether more may follow."""
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _s(owner_pk(owner)), ":prefix": _s(LIST_PREFIX)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after:
            params["ExclusiveStartKey"] = {"pk": _s(owner_pk(owner)), "sk": _s(after)}
        response = self.db.query(**params)
        rows = [(item["sk"]["S"], item["job_id"]["S"]) for item in response.get("Items", [])]
        return rows, "LastEvaluatedKey" in response


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: int) -> dict:
    return {"N": str(int(value))}
