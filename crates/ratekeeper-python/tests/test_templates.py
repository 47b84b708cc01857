"""Templates from Python: per-key limits on demand, picked per item by
``throttled_map(key=...)`` and per request host by the HTTP integrations."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import ratekeeper
from conftest import _names as counter
from ratekeeper.httpx import LimitedTransport


def new_template(rk, slots, **options):
    name = f"t{os.getpid()}-{next(counter)}:*"
    rk.create_limit(name, slots, **options)
    return name


def test_a_template_shows_its_instances_and_an_instance_its_template(rk):
    template = new_template(rk, 2, max_instances=10)
    key = template[:-1] + "acme"
    lease = rk.acquire(key)
    assert rk.limit(key).instance_of == template
    assert rk.limit(template).template == {"instances": 1, "max_instances": 10}
    assert rk.limit(template).held == 1
    other = rk.acquire(template[:-1] + "globex")
    page, after = rk.instances(template, count=1)
    assert [limit.name for limit in page] == [key] and after == key
    page, after = rk.instances(template, after=after)
    assert [limit.name for limit in page] == [template[:-1] + "globex"] and after is None
    other.release()
    lease.release()
    assert rk.limit(template).template["instances"] == 0, "an idle instance is dropped"
    with pytest.raises(ratekeeper.errors.LimitIsTemplate):
        rk.acquire(template)


def test_throttled_map_takes_a_template_per_item_key(rk):
    template = new_template(rk, 1)
    inside, most, lock = {}, {}, threading.Lock()

    def work(item):
        tenant, _ = item
        with lock:
            inside[tenant] = inside.get(tenant, 0) + 1
            most[tenant] = max(most.get(tenant, 0), inside[tenant])
        time.sleep(0.02)
        with lock:
            inside[tenant] -= 1
        return item

    items = [(tenant, i) for i in range(4) for tenant in ("acme", "globex")]
    results = ratekeeper.throttled_map(work, items, max_in_flight=4, limit=template, key=lambda item: item[0])
    assert results == items
    assert most == {"acme": 1, "globex": 1}, "one at a time per tenant"
    assert rk.limit(template).template is not None


def test_a_template_without_a_key_is_refused_before_any_call(rk):
    template = new_template(rk, 1)
    calls = []
    with pytest.raises(ratekeeper.InvalidRequest) as raised:
        ratekeeper.throttled_map(calls.append, [1, 2], limit=template)
    assert raised.value.field == "key"
    assert calls == []


def test_the_httpx_transport_takes_a_template_on_each_requests_host(rk):
    template = new_template(rk, 1)
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(rk.limit(template[:-1] + "127.0.0.1").held)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with httpx.Client(transport=LimitedTransport(limit=template)) as http:
            for _ in range(3):
                assert http.get(f"http://127.0.0.1:{server.server_port}/").status_code == 200
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [1, 1, 1], "each request held the host's instance"
