"""The error taxonomy: every domain error is classified exactly once."""

import pytest

from call_enricher import errors
from call_enricher.events import REASON_NOT_FINAL_IN_TIME
from call_enricher.service import _is_final_failure


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


def test_the_failure_reasons_are_exactly_the_ones_a_failure_state_can_carry():
    # Given the library's error classes whose failure the service stores instead of retrying
    def subclasses(cls):
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    stored = {
        cls.reason
        for cls in subclasses(errors.CallEnricherError)[1:]  # the base is abstract
        if cls.__module__ == errors.__name__
        and _is_final_failure(cls("x"))
        and cls.error_class is not errors.ErrorClass.NOT_FINAL  # stored as not-final-in-time
    }
    # When compared with the one list of failure reasons
    listed = [reason.value for reason in errors.FailureReason]
    # Then it is those, plus not-final-in-time, each once
    assert set(listed) == stored | {REASON_NOT_FINAL_IN_TIME}
    assert len(listed) == len(set(listed))
    # And a failure state is stored with that reason: plain strings, equal to the members
    assert errors.CallNotFoundError.reason == errors.FailureReason.CALL_NOT_FOUND
    assert type(errors.CallNotFoundError.reason) is str
