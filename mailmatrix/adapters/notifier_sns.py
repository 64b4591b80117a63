"""Notifier on Amazon SNS."""

from __future__ import annotations

import logging
import re
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from mailmatrix.adapters import _aws
from mailmatrix.errors import MailMatrixError
from mailmatrix.ports import Notification

logger = logging.getLogger(__name__)

# SNS subjects: ASCII, no line breaks or control characters, at most 100 characters.
# https://docs.aws.amazon.com/sns/latest/api/API_Publish.html
_SUBJECT_LIMIT = 100
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]+")


class SnsNotifier:
    """Publishes summaries and alerts to SNS topics (``topic`` is the topic ARN)."""

    def __init__(self, client: Any = None) -> None:
        self._sns = client or _aws.client("sns")

    def publish(self, topic: str, notification: Notification) -> str:
        """Publish ``notification`` to the topic ARN ``topic`` and return SNS's message id."""
        request: dict[str, Any] = {"TopicArn": topic, "Message": notification.message}
        subject = sns_subject(notification.subject)
        if subject:
            request["Subject"] = subject
        if notification.attributes:
            request["MessageAttributes"] = {
                name: {"DataType": "String", "StringValue": value}
                for name, value in notification.attributes.items()
            }
        try:
            response = self._sns.publish(**request)
        except (ClientError, BotoCoreError) as error:
            raise MailMatrixError(f"sns: publish to {topic} failed: {error}") from error
        logger.debug("sns published to %s", topic)
        return str(response["MessageId"])


def sns_subject(subject: str) -> str:
    """Return ``subject`` made acceptable to SNS: printable ASCII, at most 100 characters."""
    text = _NOT_SUBJECT.sub(" ", subject).strip()
    text = re.sub(r" {2,}", " ", text)
    if len(text) > _SUBJECT_LIMIT:
        text = text[: _SUBJECT_LIMIT - 3].rstrip() + "..."
    return text
