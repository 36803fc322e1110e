"""S3's record of new uploads: the bucket notifies an SQS queue of every object created under raw/ and
uploads/; the run drains it (fruits_pipeline.upload_events). A dead-letter queue keeps what the run
could not read. Provisioned and audited like the rest of infra/.
"""
from __future__ import annotations

import json

from botocore.exceptions import ClientError

from fruits_contract.lake import REDELIVERY_WINDOW_DAYS
from fruits_infra.policies import PolicyContext, canonical, render

DEAD_LETTER_SUFFIX = "-dead-letter"
# A message the run received this many times without deleting it (it could not read it) moves to the
# dead-letter queue, where a person reads it.
MAX_RECEIVE_COUNT = 5
# Longer than the run's visibility timeout (upload_events.VISIBILITY_TIMEOUT_SECONDS).
VISIBILITY_TIMEOUT_SECONDS = 900
NOTIFIED_FOLDERS = ("raw", "uploads")


def queue_arn(context: PolicyContext, name: str) -> str:
    return f"arn:aws:sqs:{context.region}:{context.account}:{name}"


def desired_attributes(context: PolicyContext) -> dict[str, dict[str, str]]:
    """Queue name -> its attributes: the retention is the ledger's redelivery window (SQS's maximum)."""
    retention = str(REDELIVERY_WINDOW_DAYS * 86_400)
    dead_letter = context.upload_queue + DEAD_LETTER_SUFFIX
    return {
        dead_letter: {"MessageRetentionPeriod": retention, "SqsManagedSseEnabled": "true"},
        context.upload_queue: {
            "MessageRetentionPeriod": retention, "SqsManagedSseEnabled": "true",
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue_arn(context, dead_letter),
                                         "maxReceiveCount": MAX_RECEIVE_COUNT}),
            "Policy": json.dumps(render("upload_queue_policy", context)),
        },
    }


def desired_notifications(context: PolicyContext) -> list[dict]:
    return [{"Id": f"{context.upload_queue}-{folder}", "QueueArn": queue_arn(context, context.upload_queue),
             "Events": ["s3:ObjectCreated:*"],
             "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{context.prefix}{folder}/"}]}}}
            for folder in NOTIFIED_FOLDERS]


def _queue_url(sqs, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise


def _differs(name: str, current: dict, desired: dict) -> list[str]:
    found = []
    for attribute, value in desired.items():
        have = current.get(attribute)
        same = canonical(have) == canonical(value) if attribute in ("Policy", "RedrivePolicy") and have else have == value
        if not same:
            found.append(f"sqs queue {name}: {attribute} is {have!r}, not {value!r}")
    return found


def _notifications(s3, bucket: str) -> tuple[dict, dict[str, dict]]:
    """The bucket's notification configuration (as put_bucket_notification_configuration takes it back)
    and its queue notifications by Id."""
    configuration = s3.get_bucket_notification_configuration(Bucket=bucket)
    configuration.pop("ResponseMetadata", None)
    return configuration, {entry.get("Id"): entry for entry in configuration.get("QueueConfigurations", [])}


def _same_notification(current: dict | None, desired: dict) -> bool:
    if current is None:
        return False
    rules = {(r["Name"].lower(), r["Value"]) for r in current.get("Filter", {}).get("Key", {}).get("FilterRules", [])}
    return (current.get("QueueArn") == desired["QueueArn"] and current.get("Events") == desired["Events"]
            and rules == {(r["Name"], r["Value"]) for r in desired["Filter"]["Key"]["FilterRules"]})


def ensure_upload_queue(sqs, s3, context: PolicyContext, report) -> str:
    """Create or correct both queues and the bucket's notifications; returns the queue's URL (what
    FRUITS_UPLOAD_QUEUE_URL is set to)."""
    url = None
    for name, attributes in desired_attributes(context).items():  # the dead-letter queue first
        url = _queue_url(sqs, name)
        resource = f"sqs queue {name}"
        if url is None:
            url = sqs.create_queue(QueueName=name, Attributes=attributes,
                                   tags={"project": "fruits-pipeline"})["QueueUrl"]
            report.add(resource, "created")
            continue
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        drift = _differs(name, current, attributes)
        if drift:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            report.add(resource, "updated", "; ".join(drift))
        else:
            report.add(resource, "unchanged")
    current, have = _notifications(s3, context.bucket)
    desired = desired_notifications(context)
    ours = {entry["Id"] for entry in desired}
    resource = f"s3://{context.bucket} notifications"
    if all(_same_notification(have.get(entry["Id"]), entry) for entry in desired):
        report.add(resource, "unchanged")
    else:
        # The call replaces the whole configuration: everything else the bucket notifies stays.
        current["QueueConfigurations"] = [entry for entry in current.get("QueueConfigurations", [])
                                          if entry.get("Id") not in ours] + desired
        s3.put_bucket_notification_configuration(Bucket=context.bucket, NotificationConfiguration=current)
        report.add(resource, "updated" if have.keys() & ours else "created",
                   f"object created under {', '.join(f'{context.prefix}{f}/' for f in NOTIFIED_FOLDERS)}")
    return url


def upload_queue_deviations(sqs, s3, context: PolicyContext) -> list[str]:
    deviations = []
    for name, attributes in desired_attributes(context).items():
        url = _queue_url(sqs, name)
        if url is None:
            deviations.append(f"sqs queue {name}: missing in {context.region}")
            continue
        deviations += _differs(name, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"],
                               attributes)
    _, have = _notifications(s3, context.bucket)
    for entry in desired_notifications(context):
        if not _same_notification(have.get(entry["Id"]), entry):
            deviations.append(f"s3://{context.bucket}: notification {entry['Id']} (new objects under "
                              f"{entry['Filter']['Key']['FilterRules'][0]['Value']} to {entry['QueueArn']}) is "
                              f"{'missing' if entry['Id'] not in have else 'different'}")
    return deviations
