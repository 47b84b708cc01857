"""Exceptions come from the API's one table of error codes: a class for
every code, under the class of its family, raised for that exact code."""

import pytest

import ratekeeper
from ratekeeper import errors
from ratekeeper._native import error_codes

from conftest import new_limit


def test_every_code_of_the_api_has_a_class_under_its_family():
    table = error_codes()
    assert len(table) > 30
    for code, family, status, retryable in table:
        cls = errors.BY_CODE[code]
        assert cls.code == code
        assert issubclass(cls, errors.BY_CODE.get(family, errors.InvalidRequest))
        assert issubclass(cls, ratekeeper.RatekeeperError)


def test_a_refusal_raises_the_class_of_its_exact_code_and_its_familys(rk):
    name = new_limit(rk, 1)
    with pytest.raises(errors.OccupyExceedsSlots) as raised:
        rk.acquire(name, occupy=5)
    assert isinstance(raised.value, ratekeeper.InvalidRequest)
    assert isinstance(raised.value, ValueError)
    assert raised.value.code == "occupy_exceeds_slots"
    with pytest.raises(errors.InvalidName):
        rk.create_limit("a/b", slots=1)


def test_retryable_codes_are_unavailable_ones():
    assert issubclass(errors.BY_CODE["too_many_tickets"], ratekeeper.Unavailable)
    assert issubclass(errors.BY_CODE["lease_revoked"], ratekeeper.LeaseLost)
    assert issubclass(errors.BY_CODE["forbidden"], ratekeeper.Unauthorized)
