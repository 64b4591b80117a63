"""Storage on an S3 bucket (boto3)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from mailmatrix.adapters import _aws
from mailmatrix.errors import NotFoundError, ObjectChanged, StorageError
from mailmatrix.ports import ObjectInfo

logger = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}


class S3Storage:
    """The bucket's incoming/, attachments/, templates/, validated/, results/, reports/."""

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._s3 = client or _aws.client("s3")

    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise NotFoundError when absent."""
        with self.open(key) as body:
            return body.read()

    def open(
        self, key: str, *, version: str | None = None, if_match: str | None = None
    ) -> BinaryIO:
        """Return a readable stream of the object's body (of ``version``; ``if_match``: only
        while its ETag is that one, else ObjectChanged)."""
        try:
            response = self._s3.get_object(
                Bucket=self.bucket, Key=key, **_pinned(version, if_match)
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("get", key, error, if_match) from error
        return cast(BinaryIO, response["Body"])

    def head(
        self, key: str, *, version: str | None = None, if_match: str | None = None
    ) -> ObjectInfo:
        """Return the object's metadata (of ``version``; ``if_match`` as for ``open``); raise
        NotFoundError when absent."""
        try:
            response = self._s3.head_object(
                Bucket=self.bucket, Key=key, **_pinned(version, if_match)
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("head", key, error, if_match) from error
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=_etag(response.get("ETag")),
            version_id=_version(response.get("VersionId")),
            modified=response["LastModified"].timestamp() if "LastModified" in response else None,
            metadata=response.get("Metadata") or {},
        )

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing what was there."""
        extra = {"ContentType": content_type} if content_type else {}
        try:
            response = self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except (ClientError, BotoCoreError) as error:
            raise self._error("put", key, error) from error
        logger.debug("s3 put %s (%d bytes)", key, len(data))
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=_etag(response.get("ETag")),
            version_id=_version(response.get("VersionId")),
        )

    def put_file(self, key: str, path: str, *, content_type: str | None = None) -> ObjectInfo:
        """Upload the local file at ``path`` under ``key`` (multipart when large)."""
        extra = {"ContentType": content_type} if content_type else None
        try:
            self._s3.upload_file(path, self.bucket, key, ExtraArgs=extra)
        except (ClientError, BotoCoreError) as error:
            raise self._error("put", key, error) from error
        except OSError as error:
            raise StorageError(
                f"s3://{self.bucket}/{key}: put: cannot read {path}: {error}"
            ) from error
        return self.head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order (S3 has no links:
        each key is its own object, so no identity is given)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"], size=int(item.get("Size", 0)), etag=_etag(item.get("ETag"))
                    )
        except (ClientError, BotoCoreError) as error:
            raise self._error("list", prefix, error) from error

    def _error(
        self, action: str, key: str, error: Exception, if_match: str | None = None
    ) -> StorageError:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(error, ClientError) and (
            _aws.error_code(error) in _MISSING or _aws.http_status(error) == 404
        ):
            return NotFoundError(f"{where}: {action}: no such object")
        if isinstance(error, ClientError) and _aws.http_status(error) == 412:
            return ObjectChanged(f"{where}: {action}: its ETag is no longer {if_match}")
        return StorageError(f"{where}: {action} failed: {error}")


def _pinned(version: str | None, if_match: str | None) -> dict[str, str]:
    """The GetObject/HeadObject parameters that read one version, or only a given ETag (S3
    answers 412 Precondition Failed to another)."""
    pinned = {"VersionId": version} if version else {}
    if if_match:
        pinned["IfMatch"] = f'"{if_match.strip(chr(34))}"'
    return pinned


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _version(value: str | None) -> str | None:
    # S3 reports "null" for objects written before versioning was turned on.
    return None if value in (None, "", "null") else value
