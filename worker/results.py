"""Results on their way to the service: how many a claim carries, what they are expected
to take, checkpoints sent on their own when a claim would be too large, the log."""

from __future__ import annotations

import base64
import logging
from typing import Any

from worker.client import ApiError, Client, LeaseLostError
from worker.policy import CLAIM_BATCH

log = logging.getLogger("caviar.worker")

RESULTS_PER_CLAIM = CLAIM_BATCH  # the service's MAX_RESULTS_PER_CLAIM
# About this many bytes of results per claim at most (the service takes 16 MB bodies).
CLAIM_BYTES = 8 * 1024 * 1024


def claimable(
    finished: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The results the next claim carries (within RESULTS_PER_CLAIM and CLAIM_BYTES, one at
    least), and those left for the one after."""
    taken, size = 0, 0
    for result in finished[:RESULTS_PER_CLAIM]:
        size += result_bytes(result)
        if taken and size > CLAIM_BYTES:
            break
        taken += 1
    return finished[:taken], finished[taken:]


def result_bytes(result: dict[str, Any]) -> int:
    """About the size of a result in a claim's JSON: its checkpoint and its epochs."""
    checkpoint = result.get("checkpoint")
    epochs = len(result["curve"]["epoch"]) if "curve" in result else 0
    return 200 + (len(checkpoint["content"]) if checkpoint else 0) + 170 * epochs


def expected_work(runs: Any) -> float:
    """The expected seconds of leased trials (inf if any is of a study not known yet)."""
    total = 0.0
    for run in runs:
        if run.expected is None:
            return float("inf")
        total += run.expected
    return total


def log_answers(sent: list[dict[str, Any]], answers: list[dict[str, Any]]) -> None:
    """A line per refused result; per result only at debug level, or for trials that took
    longer than a claim's delay (many short trials would fill the log)."""
    took = {r["trial_id"]: r.get("seconds") or 0.0 for r in sent}
    for done in answers:
        extra = {"trial_id": done["trial_id"], "action": "finish"}
        if done["status"] is None:
            log.warning(
                "trial %s: result refused: %s", done["trial_id"], done["error"], extra=extra
            )
        else:
            level = logging.INFO if took.get(done["trial_id"], 0.0) >= 1.0 else logging.DEBUG
            log.log(level, "trial %s: %s", done["trial_id"], done["status"], extra=extra)


def upload_checkpoints(client: Client, finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results, their inline checkpoints uploaded on their own first (the claim thread,
    when a claim with them was too large).

    An upload the service refuses fails its trial, as a refused result would; one
    whose lease was lost drops its result (another owner has the trial).
    """
    out = []
    for result in finished:
        checkpoint = result.pop("checkpoint", None)
        if checkpoint is not None:
            try:
                client.request(
                    "POST",
                    f"/api/worker/trials/{result['trial_id']}/checkpoints",
                    params={"epoch": checkpoint["epoch"]},
                    content=base64.b64decode(checkpoint["content"]),
                    headers={
                        "x-lease-token": result["lease_token"],
                        "content-type": "application/octet-stream",
                    },
                )
            except LeaseLostError:
                continue
            except ApiError as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("trial %s: upload failed: %s", result["trial_id"], error)
                result = {**result, "outcome": "failed", "error": error}
        out.append(result)
    return out
