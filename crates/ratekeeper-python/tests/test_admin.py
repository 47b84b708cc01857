"""The admin API: typed limits and leases, every field changeable, errors
that name what is wrong."""

import pytest

import ratekeeper
from ratekeeper import InvalidRequest, Limit, LimitExists, LimitNotFound, admin

from conftest import new_limit


def test_created_limit_comes_back_typed_with_every_field(rk):
    name = new_limit(rk, 3)
    limit = rk.limit(name)
    assert isinstance(limit, Limit)
    assert (limit.name, limit.slots, limit.active, limit.held, limit.waiting) == (name, 3, True, 0, 0)
    assert "slots=3" in repr(limit)
    assert not limit.is_rate_limit


def test_update_changes_every_field_and_leaves_the_rest(rk):
    name = new_limit(rk, 3)
    changed = rk.update_limit(name, slots=5, slot_decay_per_second=2.5, description="five")
    assert (changed.slots, changed.slot_decay_per_second, changed.description, changed.active) == (5, 2.5, "five", True)
    assert rk.disable_limit(name).active is False
    assert rk.enable_limit(name).active is True
    kept = rk.update_limit(name, slots=6)
    assert (kept.slots, kept.description) == (6, "five")
    assert rk.update_limit(name, description=None).description is None


def test_limits_are_listed_by_name_and_leases_with_their_holder(rk):
    first, second = new_limit(rk, 2), new_limit(rk, 2)
    names = [limit.name for limit in rk.limits()]
    assert names == sorted(names) and {first, second} <= set(names)
    with ratekeeper.concurrency([first, second], holder={"type": "task_run", "id": "abc"}) as lease:
        [info] = rk.leases(first)
        assert info.id == lease.id
        assert info.holder == "task_run:abc"
        assert info.limits == [first, second]
        assert info.expires_at > info.granted_at
    assert rk.leases(first) == []


def test_creating_an_existing_limit_raises_limit_exists(rk):
    name = new_limit(rk, 1)
    with pytest.raises(LimitExists) as err:
        rk.create_limit(name, 2)
    assert err.value.code == "limit_exists"
    assert isinstance(err.value, InvalidRequest)
    assert rk.ensure_limit(name, 5).slots == 1  # an existing limit is left alone


def test_bad_values_name_the_field_and_change_nothing(rk):
    name = new_limit(rk, 1)
    with pytest.raises(InvalidRequest) as err:
        rk.update_limit(name, slot_decay_per_second=-1.0)
    assert err.value.field == "slot_decay_per_second"
    with pytest.raises(InvalidRequest) as err:
        rk.create_limit("has space", 1)
    assert err.value.field == "name"
    assert rk.limit(name).slot_decay_per_second == 0


def test_missing_limits_raise_limit_not_found(rk):
    for call in (lambda: rk.limit("nope-x"), lambda: rk.update_limit("nope-x", slots=1), lambda: rk.delete_limit("nope-x")):
        with pytest.raises(LimitNotFound):
            call()


def test_a_name_with_a_slash_is_refused_as_a_name_not_lost_in_routing(rk):
    with pytest.raises(InvalidRequest) as err:
        rk.limit("a/b")
    assert err.value.code == "invalid_name"


def test_module_functions_use_the_shared_client(rk):
    name = new_limit(rk, 1)
    assert admin.get_limit(name).slots == 1
    assert admin.reset_limit(name).held == 0
    admin.delete_limit(name)
    assert name not in [limit.name for limit in admin.limits()]


def test_version_is_the_package_version():
    assert ratekeeper.__version__.count(".") == 2


def test_a_token_over_its_lease_quota_raises_quota_exceeded(tmp_path):
    import re
    import subprocess

    from conftest import BINARY

    admin_token, client_token = "admin-token-for-quota-tests", "client-token-for-quota-tests"
    process = subprocess.Popen(
        [BINARY, "serve", "--addr", "127.0.0.1:0", "--data-dir", str(tmp_path),
         "--admin-token", admin_token, "--client-token", client_token,
         "--max-leases-per-token", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = re.search(r"http://[0-9.:]+", process.stdout.readline()).group(0)
        ratekeeper.Client(url, token=admin_token).create_limit("quota", slots=5)
        client = ratekeeper.Client(url, token=client_token)
        lease = client.acquire("quota")
        with pytest.raises(ratekeeper.QuotaExceeded) as raised:
            client.acquire("quota")
        assert raised.value.code == "quota_exceeded"
        assert "max_leases" in str(raised.value)
        lease.release()
        # Released: the quota has room again.
        client.acquire("quota").release()
    finally:
        process.terminate()
        process.wait()
        process.stdout.close()
