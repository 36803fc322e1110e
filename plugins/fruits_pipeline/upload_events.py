"""S3's record of what arrived: its event notifications, drained from an SQS queue (docs/design.md, "The ledger").

The bucket notifies the queue of every object created under raw/ and uploads/ (infra/ provisions
both, and a dead-letter queue). A run drains the queue: each batch of messages is appended to the
ledger's arrivals in one commit, and only then deleted from the queue, so a run killed between the
two leaves the messages to be delivered again. Delivery is at least once: a message seen twice, or
an upload notified twice, is one arrival (the ledger keys them by path). A message that is not an
S3 notification is named in the log and left in the queue; after the queue's maxReceiveCount it
moves to the dead-letter queue, where a person can read it.
"""
from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote_plus

from fruits_contract.lake import Lake
from fruits_pipeline.ledger import Arrival

log = logging.getLogger(__name__)

# SQS's limits: 10 messages per receive and per batch delete.
MESSAGES_PER_RECEIVE = 10
# Appended to the arrivals in one commit, then deleted: a few commits for a day of 5,000 uploads.
MESSAGES_PER_COMMIT = 1_000
# A run drains at most this many messages (the rest wait for the next run): the task's time is bounded
# however much a backlog grew.
MAX_MESSAGES_PER_RUN = 200_000
# Long enough for a batch to be committed before SQS hands its messages to another reader.
VISIBILITY_TIMEOUT_SECONDS = 600


class NotAnS3Event(ValueError):
    """A queue message that is not an S3 event notification; names what is wrong with it."""


@dataclass
class DrainSummary:
    messages: int = 0  # received (a redelivered message counts each time)
    uploads: int = 0  # object-created records under raw/ or uploads/
    ignored: int = 0  # records of other keys or events, and S3's test event
    unreadable: list[str] = field(default_factory=list)  # why each message not understood was left in the queue

    def as_dict(self) -> dict:
        return asdict(self)


def arrivals_of(body: str, lake: Lake) -> tuple[list[Arrival], int]:
    """The uploads an S3 notification's body tells of, and how many of its records are not uploads.
    Keys arrive URL-encoded (a space as '+'): decoded once, the literal key is the upload's name."""
    try:
        message = json.loads(body)
    except ValueError as error:
        raise NotAnS3Event(f"not JSON ({error})") from None
    if not isinstance(message, dict):
        raise NotAnS3Event("not a JSON object")
    if message.get("Event") == "s3:TestEvent":  # S3 sends one when the notification is configured
        return [], 1
    if not isinstance(message.get("Records"), list):
        raise NotAnS3Event("no 'Records' list: not an S3 event notification")
    prefix = lake.base_uri[len(f"s3://{lake.bucket}"):].strip("/")
    roots = tuple(posixpath.join(prefix, name) + "/" for name in ("raw", "uploads"))
    arrivals, ignored = [], 0
    for record in message["Records"]:
        try:
            bucket, key = record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])
            size, at, event = int(record["s3"]["object"].get("size", 0)), record["eventTime"], record["eventName"]
        except (KeyError, TypeError, ValueError) as error:
            raise NotAnS3Event(f"a record without {error}: not an S3 event record") from None
        hidden = posixpath.basename(key).startswith(".") or key.endswith("/")
        if bucket != lake.bucket or not event.startswith("ObjectCreated:") or not key.startswith(roots) or hidden:
            ignored += 1
            continue
        arrivals.append(Arrival(f"s3://{bucket}/{key}", size, at, "event"))
    return arrivals, ignored


class UploadQueue:
    """The lake's notification queue, read through the Amazon provider's SQS hook (the AWS connection)."""

    def __init__(self, queue_url: str, lake: Lake, conn_id: str | None, region: str | None = None):
        self.queue_url, self.lake, self.conn_id, self.region = queue_url, lake, conn_id, region

    def _client(self):
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        return SqsHook(aws_conn_id=self.conn_id, region_name=self.region).get_conn()

    def drain(self, record, *, max_messages: int = MAX_MESSAGES_PER_RUN) -> dict:
        """Receive until the queue is empty (or ``max_messages``), handing each batch's arrivals to
        ``record`` (which must make them durable) before deleting its messages; returns the summary."""
        sqs, summary = self._client(), DrainSummary()
        while summary.messages < max_messages:
            arrivals, handles = [], []
            while len(handles) < MESSAGES_PER_COMMIT and summary.messages < max_messages:
                received = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=MESSAGES_PER_RECEIVE,
                                               WaitTimeSeconds=1, VisibilityTimeout=VISIBILITY_TIMEOUT_SECONDS)
                messages = received.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    summary.messages += 1
                    try:
                        found, ignored = arrivals_of(message.get("Body", ""), self.lake)
                    except NotAnS3Event as error:
                        why = f"message {message.get('MessageId')}: {error}; left for the dead-letter queue"
                        log.warning("upload queue %s: %s", self.queue_url, why)
                        summary.unreadable.append(why)
                        continue
                    arrivals += found
                    summary.uploads += len(found)
                    summary.ignored += ignored
                    handles.append(message["ReceiptHandle"])
            if not handles:
                break
            record(arrivals)  # durable first: a run killed now leaves the messages to come again
            for start in range(0, len(handles), MESSAGES_PER_RECEIVE):
                sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": handle}
                    for n, handle in enumerate(handles[start:start + MESSAGES_PER_RECEIVE])])
            log.info("upload queue: %d message(s) so far, %d upload(s) notified", summary.messages, summary.uploads)
        return summary.as_dict()
