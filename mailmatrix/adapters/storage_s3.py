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

    concurrent_reads = 16  # each GetObject or HeadObject waits some milliseconds on S3

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self._s3 = client or _aws.client("s3")

    def get(self, key: str, *, tag: str | None = None) -> bytes:
        """Return the object's bytes; raise NotFoundError when absent (``tag`` as for
        ``open``)."""
        with self.open(key, tag=tag) as body:
            return body.read()

    def open(self, key: str, *, version: str | None = None, tag: str | None = None) -> BinaryIO:
        """Return a readable stream of the object's body: of ``version`` when given; with
        ``tag`` (its ETag, from a listing or an event) S3 gives that version or none
        (If-Match): ObjectChanged on its 412."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key, **_pinned(version, tag))
        except (ClientError, BotoCoreError) as error:
            raise self._error("get", key, error, tag) from error
        return cast(BinaryIO, response["Body"])

    def head(self, key: str, *, version: str | None = None, tag: str | None = None) -> ObjectInfo:
        """Return the object's metadata (``version`` and ``tag`` as for ``open``); raise
        NotFoundError when absent."""
        try:
            response = self._s3.head_object(Bucket=self.bucket, Key=key, **_pinned(version, tag))
        except (ClientError, BotoCoreError) as error:
            raise self._error("head", key, error, tag) from error
        etag = _etag(response.get("ETag"))
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            etag=etag,
            tag=etag,
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
        each key is its own object, so no identity is given); an object's tag is its ETag."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    etag = _etag(item.get("ETag"))
                    yield ObjectInfo(
                        key=item["Key"], size=int(item.get("Size", 0)), etag=etag, tag=etag
                    )
        except (ClientError, BotoCoreError) as error:
            raise self._error("list", prefix, error) from error

    def checksum(self, key: str, *, tag: str | None = None) -> str | None:
        """The object's full-object checksum (HeadObject with ChecksumMode=ENABLED; ``tag`` as
        for ``open``), or None: none stored, or a multipart upload's composite checksum, which
        depends on the part sizes as well as the bytes."""
        try:
            response = self._s3.head_object(
                Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **_pinned(None, tag)
            )
        except (ClientError, BotoCoreError) as error:
            raise self._error("head", key, error, tag) from error
        return _full_object_checksum(response)

    def first_bytes(self, key: str, count: int, *, tag: str | None = None) -> None:
        """None: the start of an object takes a request of its own, one per file, which
        validation of a campaign does not make; the send reads each file whole and checks it
        then."""
        return None

    def _error(
        self, action: str, key: str, error: Exception, tag: str | None = None
    ) -> StorageError:
        where = f"s3://{self.bucket}/{key}"
        if isinstance(error, ClientError) and (
            _aws.error_code(error) in _MISSING or _aws.http_status(error) == 404
        ):
            return NotFoundError(f"{where}: {action}: no such object")
        if isinstance(error, ClientError) and (
            _aws.error_code(error) == "PreconditionFailed" or _aws.http_status(error) == 412
        ):  # If-Match did not hold
            return ObjectChanged(
                f"{where}: {action}: not the version asked for (its ETag is no longer {tag})"
            )
        return StorageError(f"{where}: {action} failed: {error}")


def _pinned(version: str | None, tag: str | None) -> dict[str, str]:
    """The GetObject/HeadObject parameters that read one version, or only a given ETag (S3
    answers 412 Precondition Failed to another)."""
    pinned = {"VersionId": version} if version else {}
    if tag:
        pinned["IfMatch"] = f'"{tag.strip(chr(34))}"'
    return pinned


# The algorithms of S3's full-object checksums, the strongest first (an object may carry one):
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_Checksum.html
_CHECKSUMS = ("SHA256", "CRC64NVME", "SHA1", "CRC32C", "CRC32")


def _full_object_checksum(response: dict[str, Any]) -> str | None:
    """ "ALGORITHM value" of a HeadObject response's checksum, if it is of the whole object.

    ChecksumType FULL_OBJECT says so; COMPOSITE (a checksum of the parts' checksums) does not
    tell two copies uploaded in other parts apart from two different files. An object that
    names no type (stored before S3 gave one, or by an S3 look-alike) counts only if it was
    not a multipart upload, whose ETag ends in -N and whose composite value does too.
    """
    kind = response.get("ChecksumType")
    if kind not in (None, "FULL_OBJECT"):
        return None
    if kind is None and "-" in _etag(response.get("ETag")):
        return None
    for algorithm in _CHECKSUMS:
        value = response.get(f"Checksum{algorithm}")
        if value:
            return None if "-" in value else f"{algorithm} {value}"
    return None


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


def _version(value: str | None) -> str | None:
    # S3 reports "null" for objects written before versioning was turned on.
    return None if value in (None, "", "null") else value
