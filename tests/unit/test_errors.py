"""The error taxonomy: every domain error is classified exactly once."""

import pytest

from call_enricher import errors


@pytest.mark.parametrize(
    ("error_type", "expected_class"),
    [
        (errors.SinchUnavailableError, errors.ErrorClass.TRANSIENT),
        (errors.SinchRateLimitedError, errors.ErrorClass.TRANSIENT),
        (errors.SinchTimeoutError, errors.ErrorClass.TRANSIENT),
        (errors.DeadlineExceededError, errors.ErrorClass.TRANSIENT),
        (errors.AwsUnavailableError, errors.ErrorClass.TRANSIENT),
        (errors.InvalidCallIdError, errors.ErrorClass.PERMANENT),
        (errors.MalformedMessageError, errors.ErrorClass.PERMANENT),
        (errors.InvalidRecordError, errors.ErrorClass.PERMANENT),
        (errors.SinchRejectedError, errors.ErrorClass.PERMANENT),
        (errors.SinchAuthError, errors.ErrorClass.PERMANENT),
        (errors.ConfigurationError, errors.ErrorClass.PERMANENT),
        (errors.CallNotFoundError, errors.ErrorClass.NOT_FOUND),
        (errors.CallNotFinalError, errors.ErrorClass.NOT_FINAL),
    ],
)
def test_each_error_has_one_class(error_type, expected_class):
    # Given an error raised by the library
    err = error_type("boom", http_status=503, sinch_error_code=50300)
    # Then its class is fixed, and only transient errors are retryable
    assert err.error_class is expected_class
    assert err.retryable is (expected_class is errors.ErrorClass.TRANSIENT)
    # And its description is JSON-safe and carries the Sinch diagnostics
    described = err.to_dict()
    assert described["reason"] == error_type.reason
    assert described["sinchErrorCode"] == 50300
    assert "details" not in described


def test_reasons_are_unique():
    # Given every concrete error type
    leaves = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.CallEnricherError)
    ]
    # Then no two share a reason code (events and metrics are keyed by it)
    reasons = [cls.reason for cls in leaves]
    assert len(reasons) == len(set(reasons))
