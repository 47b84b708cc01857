"""An https:// server, trusted through RATEKEEPER_CA_CERT."""

import os
import re
import subprocess

import pytest

import ratekeeper
from conftest import BINARY


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_server(tmp_path):
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(tmp_path, "req", "-x509", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt", *ec)
    _openssl(tmp_path, "req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", *ec)
    (tmp_path / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(tmp_path, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", "server.crt", "-extfile", "server.ext")
    process = subprocess.Popen(
        [BINARY, "serve", "--addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--tls-cert", str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key")],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"https://[0-9.:]+", process.stdout.readline()).group(0)
    yield url, str(tmp_path / "ca.crt")
    process.terminate()
    process.wait()
    process.stdout.close()


def test_a_client_trusts_an_https_server_through_ratekeeper_ca_cert(tls_server, monkeypatch):
    url, ca = tls_server
    with pytest.raises(ratekeeper.Unavailable):
        ratekeeper.Client(url).limits()
    monkeypatch.setenv("RATEKEEPER_CA_CERT", ca)
    client = ratekeeper.Client(url)
    client.create_limit("tls", slots=1)
    lease = client.acquire("tls")
    assert client.limit("tls").held == 1
    lease.release()
