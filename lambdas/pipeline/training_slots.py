"""The training-slot semaphore in the jobs table (layout and rules: lambdas/jobs/training_slots.py)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from lambdas.jobs import training_slots as ts
from lambdas.pipeline.aws import client


@dataclass(frozen=True)
class SlotAnswer:
    acquired: bool
    ticket: str
    position: int
    queued_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _s(value: str) -> dict:
    return {"S": value}


def _n(value: int) -> dict:
    return {"N": str(int(value))}


class TrainingSlots:
    def __init__(self, table_name: str, dynamodb: Any = None) -> None:
        self.name = table_name
        self.db = dynamodb or client("dynamodb")
        self._holders_key = {"pk": _s(ts.SLOTS_PK), "sk": _s(ts.HOLDERS_SK)}

    def acquire(
        self,
        job_name: str,
        run_id: str,
        *,
        ticket: str | None,
        limit: int,
        hold_seconds: int,
        stale_seconds: int,
        now_ms: int,
    ) -> SlotAnswer:
        """Take a slot for this run if the queue allows it now; otherwise keep (or take) its place in line."""
        holder = ts.holder_id(job_name, run_id)
        holders = self._holders(now_ms)
        ticket = ticket or ts.ticket(now_ms, job_name, run_id)
        queued_at_ms = int(ticket.removeprefix(ts.QUEUE_PREFIX).split("#", 1)[0])
        if holder in holders:  # a retried ask after the slot was taken
            return SlotAnswer(True, ticket, 0, queued_at_ms)
        self._refresh_ticket(ticket, job_name, run_id, now_ms)
        waiting = self._waiting(now_ms, stale_seconds)
        live = ts.live_holders(holders, now_ms // 1000)
        self._reap(holders, live)
        decision = ts.decide(my_ticket=ticket, waiting=waiting, holders=len(live), limit=limit)
        if decision.acquire and self._take(holder, ticket, limit, now_ms // 1000 + hold_seconds):
            return SlotAnswer(True, ticket, 0, queued_at_ms)
        return SlotAnswer(False, ticket, decision.position, queued_at_ms)

    def release(self, job_name: str, run_id: str, ticket: str | None = None) -> None:
        """Give the slot back (and the place in line); safe to call any number of times."""
        # attribute_exists: before any run took a slot there is no map to remove from.
        with contextlib.suppress(self.db.exceptions.ConditionalCheckFailedException):
            self.db.update_item(
                TableName=self.name,
                Key=self._holders_key,
                UpdateExpression="REMOVE holders.#h",
                ConditionExpression="attribute_exists(holders)",
                ExpressionAttributeNames={"#h": ts.holder_id(job_name, run_id)},
            )
        if ticket:
            self.db.delete_item(TableName=self.name, Key={"pk": _s(ts.SLOTS_PK), "sk": _s(ticket)})

    def forget_tickets_of(self, job_name: str, run_id: str) -> None:
        """Drop the waiting tickets of a run that ended while in line."""
        suffix = "#" + ts.holder_id(job_name, run_id)
        for sk in self._tickets():
            if sk.endswith(suffix):
                self.db.delete_item(TableName=self.name, Key={"pk": _s(ts.SLOTS_PK), "sk": _s(sk)})

    def holders(self, now_ms: int) -> dict[str, int]:
        return ts.live_holders(self._holders(now_ms), now_ms // 1000)

    # --- table access ---

    def _holders(self, now_ms: int) -> dict[str, int]:
        item = self.db.get_item(TableName=self.name, Key=self._holders_key, ConsistentRead=True).get("Item")
        if item is None:
            try:
                self.db.put_item(
                    TableName=self.name,
                    Item={**self._holders_key, "holders": {"M": {}}, "created_at_ms": _n(now_ms)},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except self.db.exceptions.ConditionalCheckFailedException:
                return self._holders(now_ms)
            return {}
        return {name: int(value["N"]) for name, value in item.get("holders", {}).get("M", {}).items()}

    def _refresh_ticket(self, ticket: str, job_name: str, run_id: str, now_ms: int) -> None:
        self.db.put_item(
            TableName=self.name,
            Item={
                "pk": _s(ts.SLOTS_PK),
                "sk": _s(ticket),
                "job_name": _s(job_name),
                "run_id": _s(run_id),
                "heartbeat_ms": _n(now_ms),
            },
        )

    def _ticket_items(self) -> list[dict]:
        pages = self.db.get_paginator("query").paginate(
            TableName=self.name,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :queue)",
            ExpressionAttributeValues={":pk": _s(ts.SLOTS_PK), ":queue": _s(ts.QUEUE_PREFIX)},
        )
        return [item for page in pages for item in page.get("Items", [])]

    def _tickets(self) -> list[str]:
        return [item["sk"]["S"] for item in self._ticket_items()]

    def _waiting(self, now_ms: int, stale_seconds: int) -> list[str]:
        waiting = []
        for item in self._ticket_items():
            if now_ms - int(item["heartbeat_ms"]["N"]) <= stale_seconds * 1000:
                waiting.append(item["sk"]["S"])
            else:  # its run is gone: it must not block the ones behind it
                self.db.delete_item(TableName=self.name, Key={"pk": item["pk"], "sk": item["sk"]})
        return waiting

    def _reap(self, holders: dict[str, int], live: dict[str, int]) -> None:
        for holder, expires in holders.items():
            if holder in live:
                continue
            # Only if nobody refreshed it meanwhile.
            with contextlib.suppress(self.db.exceptions.ConditionalCheckFailedException):
                self.db.update_item(
                    TableName=self.name,
                    Key=self._holders_key,
                    UpdateExpression="REMOVE holders.#h",
                    ConditionExpression="holders.#h = :expires",
                    ExpressionAttributeNames={"#h": holder},
                    ExpressionAttributeValues={":expires": _n(expires)},
                )

    def _take(self, holder: str, ticket: str, limit: int, expires_s: int) -> bool:
        try:
            self.db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.name,
                            "Key": self._holders_key,
                            "UpdateExpression": "SET holders.#h = :expires",
                            "ConditionExpression": (
                                "size(holders) < :limit AND attribute_not_exists(holders.#h)"
                            ),
                            "ExpressionAttributeNames": {"#h": holder},
                            "ExpressionAttributeValues": {":expires": _n(expires_s), ":limit": _n(limit)},
                        }
                    },
                    {"Delete": {"TableName": self.name, "Key": {"pk": _s(ts.SLOTS_PK), "sk": _s(ticket)}}},
                ]
            )
        except self.db.exceptions.TransactionCanceledException:
            return False  # another run took the last slot first: ask again after the wait
        return True
