"""The jobs table (layout in lambdas/jobs/batch_state.py): conditional writes that make a batch start once."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from lambdas.jobs import batch_state as bs
from lambdas.pipeline.aws import client


class Conflict(Exception):
    """Another writer changed the batch first: read it again and decide again."""


class AlreadySeen(Exception):
    """This object version already belongs to a run."""


@dataclass(frozen=True)
class Batch:
    job_name: str
    run_id: str
    state: str
    last_activity_ms: int
    committed: bool
    execution_started: bool

    @property
    def collecting(self) -> bool:
        return self.state == bs.COLLECTING


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: int) -> dict:
    return {"N": str(int(value))}


class JobsTable:
    def __init__(self, name: str, dynamodb: Any = None) -> None:
        self.name = name
        self.db = dynamodb or client("dynamodb")

    def _key(self, job_name: str, sk: str) -> dict:
        return {"pk": _s(bs.job_pk(job_name)), "sk": _s(sk)}

    def get_batch(self, job_name: str) -> Batch | None:
        item = self.db.get_item(
            TableName=self.name, Key=self._key(job_name, bs.BATCH_SK), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return Batch(
            job_name=job_name,
            run_id=item["run_id"]["S"],
            state=item["batch_state"]["S"],
            last_activity_ms=int(item["last_activity_ms"]["N"]),
            committed=item["committed"]["BOOL"],
            execution_started=item["execution_started"]["BOOL"],
        )

    def hold_batch(self, job_name: str, until_ms: int) -> None:
        """Keep the job's uncommitted batch open until ``until_ms`` (batch_state.HOLD_SK)."""
        self.db.put_item(
            TableName=self.name,
            Item={
                **self._key(job_name, bs.HOLD_SK),
                "until_ms": _n(until_ms),
                "expires_at": _n(until_ms // 1000 + bs.SEEN_TTL_SECONDS),
            },
        )

    def release_hold(self, job_name: str) -> None:
        self.db.delete_item(TableName=self.name, Key=self._key(job_name, bs.HOLD_SK))

    def held_until_ms(self, job_name: str) -> int | None:
        item = self.db.get_item(
            TableName=self.name, Key=self._key(job_name, bs.HOLD_SK), ConsistentRead=True
        ).get("Item")
        return int(item["until_ms"]["N"]) if item else None

    def get_run(self, job_name: str, run_id: str) -> dict[str, Any] | None:
        item = self.db.get_item(
            TableName=self.name, Key=self._key(job_name, bs.run_sk(run_id)), ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        run = {name: _plain(value) for name, value in item.items()}
        if "details_json" in run:
            run["details"] = json.loads(run.pop("details_json"))
        return run

    def _seen_put(self, job_name: str, run_id: str, token: str, key: str, content: str, now_ms: int) -> dict:
        return {
            "TableName": self.name,
            "Item": {
                **self._key(job_name, bs.seen_sk(token)),
                "run_id": _s(run_id),
                "object_key": _s(key),
                "content_token": _s(content),
                "expires_at": _n(now_ms // 1000 + bs.SEEN_TTL_SECONDS),
            },
        }

    def join_batch(
        self, job_name: str, run_id: str, *, token: str, key: str, content: str, committed: bool, now_ms: int
    ) -> None:
        """Count an upload into the open batch of ``run_id``; Conflict when it is no longer open."""
        update = {
            "TableName": self.name,
            "Key": self._key(job_name, bs.BATCH_SK),
            "UpdateExpression": "SET last_activity_ms = :now" + (", committed = :true" if committed else ""),
            "ConditionExpression": "run_id = :run AND batch_state = :collecting",
            "ExpressionAttributeValues": {
                ":now": _n(now_ms),
                ":run": _s(run_id),
                ":collecting": _s(bs.COLLECTING),
                **({":true": {"BOOL": True}} if committed else {}),
            },
        }
        self._transact(
            [{"Update": update}, {"Put": self._seen_put(job_name, run_id, token, key, content, now_ms)}]
        )

    def open_batch(
        self,
        job_name: str,
        run_id: str,
        *,
        previous_run_id: str | None,
        token: str,
        key: str,
        content: str,
        committed: bool,
        now_ms: int,
        execution_name: str,
    ) -> None:
        """Start a new run with this upload. AlreadySeen for a known object, Conflict when someone else
        opened a batch first."""
        if previous_run_id is None:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "run_id = :previous AND batch_state = :sealed",
                "ExpressionAttributeValues": {":previous": _s(previous_run_id), ":sealed": _s(bs.SEALED)},
            }
        batch = {
            "TableName": self.name,
            "Item": {
                **self._key(job_name, bs.BATCH_SK),
                "run_id": _s(run_id),
                "batch_state": _s(bs.COLLECTING),
                "last_activity_ms": _n(now_ms),
                "committed": {"BOOL": committed},
                "execution_started": {"BOOL": False},
                "opened_at_ms": _n(now_ms),
            },
            **condition,
        }
        run = {
            "TableName": self.name,
            "Item": {
                **self._key(job_name, bs.run_sk(run_id)),
                "job_name": _s(job_name),
                "run_id": _s(run_id),
                "run_state": _s(bs.RUN_COLLECTING),
                "created_at_ms": _n(now_ms),
                "updated_at_ms": _n(now_ms),
                "execution_name": _s(execution_name),
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        seen = self._seen_put(job_name, run_id, token, key, content, now_ms)
        seen["ConditionExpression"] = "attribute_not_exists(pk)"
        reasons = self._transact([{"Put": batch}, {"Put": run}, {"Put": seen}], raise_conflict=False)
        if reasons is None:
            return
        if reasons[2] == "ConditionalCheckFailed":
            raise AlreadySeen(key)
        raise Conflict(f"batch of {job_name!r} changed: {reasons}")

    def mark_execution_started(self, job_name: str, run_id: str) -> None:
        # When the condition fails, a newer batch replaced this one: this run was started and sealed.
        with contextlib.suppress(self.db.exceptions.ConditionalCheckFailedException):
            self.db.update_item(
                TableName=self.name,
                Key=self._key(job_name, bs.BATCH_SK),
                UpdateExpression="SET execution_started = :true",
                ConditionExpression="run_id = :run",
                ExpressionAttributeValues={":true": {"BOOL": True}, ":run": _s(run_id)},
            )

    def mark_seen(self, job_name: str, run_id: str, objects: list[tuple[str, str, str]], now_ms: int) -> None:
        """Record (token, key, content token) of every object a run covers, before it seals."""
        requests = [
            {"PutRequest": {"Item": self._seen_put(job_name, run_id, t, k, c, now_ms)["Item"]}}
            for t, k, c in objects
        ]
        for start in range(0, len(requests), 25):
            pending = {self.name: requests[start : start + 25]}
            while pending:
                pending = self.db.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def run_in_progress_covers(self, job_name: str, run_id: str, content: str) -> bool:
        """Whether ``run_id`` has not ended yet and already covers an object with this content."""
        run = self.get_run(job_name, run_id)
        if run is None or run.get("run_state") in bs.FINAL_RUN_STATES:
            return False
        pages = self.db.get_paginator("query").paginate(
            TableName=self.name,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :seen)",
            FilterExpression="run_id = :run AND content_token = :content",
            ExpressionAttributeValues={
                ":pk": _s(bs.job_pk(job_name)),
                ":seen": _s(bs.SEEN_PREFIX),
                ":run": _s(run_id),
                ":content": _s(content),
            },
            ProjectionExpression="sk",
        )
        return any(page.get("Items") for page in pages)

    def seal(self, job_name: str, run_id: str, *, last_activity_ms: int, now_ms: int) -> bool:
        """Close the batch to new uploads, unless one arrived since ``last_activity_ms`` was read."""
        batch = {
            "TableName": self.name,
            "Key": self._key(job_name, bs.BATCH_SK),
            "UpdateExpression": "SET batch_state = :sealed, sealed_at_ms = :now",
            "ConditionExpression": "run_id = :run AND batch_state = :collecting AND last_activity_ms = :seen",
            "ExpressionAttributeValues": {
                ":sealed": _s(bs.SEALED),
                ":now": _n(now_ms),
                ":run": _s(run_id),
                ":collecting": _s(bs.COLLECTING),
                ":seen": _n(last_activity_ms),
            },
        }
        run = self._run_update(job_name, run_id, bs.RUN_SEALED, now_ms, {"sealed_at_ms": now_ms})
        try:
            self._transact([{"Update": batch}, {"Update": run}])
        except Conflict:
            return False
        return True

    def close_batch(self, job_name: str, run_id: str, now_ms: int) -> bool:
        """After a failure before sealing: later uploads must open a new run, not join a dead one."""
        try:
            self.db.update_item(
                TableName=self.name,
                Key=self._key(job_name, bs.BATCH_SK),
                UpdateExpression="SET batch_state = :sealed, sealed_at_ms = :now",
                ConditionExpression="run_id = :run AND batch_state = :collecting",
                ExpressionAttributeValues={
                    ":sealed": _s(bs.SEALED),
                    ":now": _n(now_ms),
                    ":run": _s(run_id),
                    ":collecting": _s(bs.COLLECTING),
                },
            )
        except self.db.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def record_run(
        self,
        job_name: str,
        run_id: str,
        state: str,
        now_ms: int,
        *,
        details: dict[str, Any] | None = None,
        **attributes: str | int,
    ) -> None:
        update = self._run_update(job_name, run_id, state, now_ms, attributes, details)
        update.pop("ConditionExpression")
        self.db.update_item(**update)

    def _run_update(
        self,
        job_name: str,
        run_id: str,
        state: str,
        now_ms: int,
        attributes: dict[str, str | int],
        details: dict[str, Any] | None = None,
    ) -> dict:
        values: dict[str, Any] = {":state": _s(state), ":now": _n(now_ms)}
        sets = ["run_state = :state", "updated_at_ms = :now"]
        for index, (name, value) in enumerate(sorted(attributes.items())):
            sets.append(f"{name} = :a{index}")
            values[f":a{index}"] = _n(value) if isinstance(value, int) else _s(str(value))
        if details is not None:
            sets.append("details_json = :details")
            values[":details"] = _s(json.dumps(details, sort_keys=True, default=str))
        return {
            "TableName": self.name,
            "Key": self._key(job_name, bs.run_sk(run_id)),
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": values,
        }

    def _transact(self, items: list[dict], *, raise_conflict: bool = True) -> list[str] | None:
        try:
            self.db.transact_write_items(TransactItems=items)
        except self.db.exceptions.TransactionCanceledException as err:
            reasons = [r.get("Code", "None") for r in err.response.get("CancellationReasons", [])]
            if raise_conflict:
                raise Conflict(str(reasons)) from None
            return reasons + ["None"] * (len(items) - len(reasons))
        return None


def _plain(value: dict) -> Any:
    ((kind, inner),) = value.items()
    if kind == "N":
        return int(inner)
    if kind == "BOOL":
        return bool(inner)
    if kind == "NULL":
        return None
    return inner
