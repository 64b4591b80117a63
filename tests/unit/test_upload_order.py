"""Which upload an execution is for, and how uploads of one key are ordered."""

from __future__ import annotations

from mailmatrix.jobs import Source, upload_order

DETAIL = {
    "bucket": {"name": "b"},
    "object": {
        "key": "incoming/offers.csv",
        "etag": '"e1"',
        "version-id": "v1",
        "sequencer": "0055AED6DCD90281E5",
    },
}


def test_an_event_names_its_upload_by_version_else_sequencer_else_etag():
    # GIVEN an Object Created event of a bucket that keeps versions
    source = Source.from_event_detail(DETAIL)
    assert (source.etag, source.version_id, source.sequencer) == ("e1", "v1", "0055AED6DCD90281E5")
    assert source.upload("c", "arn:exec").upload == "v1"

    # WHEN the bucket keeps no versions (no version, or S3's "null") THEN its sequencer names it
    for version in ({}, {"version-id": "null"}):
        obj = {k: v for k, v in DETAIL["object"].items() if k != "version-id"} | version
        unversioned = Source.from_event_detail({**DETAIL, "object": obj})
        assert unversioned.version_id is None
        assert unversioned.upload("c", None).upload == "0055AED6DCD90281E5"
    # AND without a sequencer either (an execution started by hand), its ETag
    assert Source("b", "k", "e1").upload("c", None).upload == "e1"


def test_uploads_sort_by_sequencer_whatever_its_length_and_none_first():
    # S3's sequencers of one key compare once the shorter is right-padded with zeros
    earlier, later = upload_order("0055AED6DCD90281E5"), upload_order("0055AED6DCD9028200")
    assert earlier < later
    assert upload_order("0055aed6dcd9029") > later  # shorter, later, lower-case
    assert upload_order(None) < upload_order("0") < earlier
