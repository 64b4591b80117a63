"""MAILMATRIX_* settings: defaults, parsing and clear errors."""

from __future__ import annotations

import pytest

from mailmatrix.errors import ConfigurationError
from mailmatrix.settings import SES_V2_MAX_MESSAGE_BYTES, Settings


def test_defaults_are_the_aws_ones():
    settings = Settings.from_env({})

    assert (settings.storage, settings.mailer, settings.batch_size) == ("s3", "ses", 25)
    assert settings.max_message_bytes == SES_V2_MAX_MESSAGE_BYTES == 40 * 1024 * 1024
    assert settings.send_rate is None
    assert settings.storage_mounts == ()
    assert settings.stack == ""


def test_values_are_parsed():
    settings = Settings.from_env(
        {
            "MAILMATRIX_SEND_RATE": "14",
            "MAILMATRIX_BATCH_SIZE": "50",
            "MAILMATRIX_CHECK_DELIVERABILITY": "1",
            "MAILMATRIX_STORAGE_MOUNTS": "attachments/=/x/pdfs; templates/=/x/t",
            "MAILMATRIX_STACK": "mailmatrix-prod",
        }
    )

    assert settings.send_rate == 14.0
    assert settings.batch_size == 50
    assert settings.check_deliverability is True
    assert settings.storage_mounts == (("attachments/", "/x/pdfs"), ("templates/", "/x/t"))
    assert settings.stack == "mailmatrix-prod"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILMATRIX_SEND_RATE": "fast"}, "MAILMATRIX_SEND_RATE: not a number: 'fast'"),
        ({"MAILMATRIX_SEND_RATE": "nan"}, "MAILMATRIX_SEND_RATE: not a number: 'nan'"),
        ({"MAILMATRIX_SEND_RATE": "inf"}, "MAILMATRIX_SEND_RATE: not a number: 'inf'"),
        ({"MAILMATRIX_SEND_RATE": "1e-9"}, "MAILMATRIX_SEND_RATE: 1e-09: give 0 .no limit. or"),
        ({"MAILMATRIX_BATCH_SIZE": "0"}, "MAILMATRIX_BATCH_SIZE: must be 1..1000"),
        ({"MAILMATRIX_MAX_MESSAGE_BYTES": "-1"}, "must not be negative"),
        ({"MAILMATRIX_STORAGE_MOUNTS": "attachments=/x"}, "expected PREFIX/=DIR"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)
