"""Starting ``modelcycle serve`` safely. Over HTTPS with a test certificate (a CA of the test's own, the
server's certificate for 127.0.0.1): the openai client and tritonclient.http (ssl=True) verify it and work
unchanged; plain HTTP gets nothing; binding beyond this machine needs TLS (or an explicit waiver); bad
certificate paths are one line naming the flag; a damaged bundle stops the start with the reason."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TINY_GPT, free_port, train_into

MLP = "breast-cancer-mlp"


def certificate_pair(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key), PEM: the server's for IP 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelcycle test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``modelcycle serve`` of an MLP and tiny-gpt over HTTPS: (base URL, CA certificate)."""
    folder = tmp_path_factory.mktemp("tls")
    home = train_into(folder / "home", (f"{MLP}.yaml", ["train.epochs=2"]), ("tiny-gpt.yaml", TINY_GPT))
    ca, certificate, key = certificate_pair(folder)
    port = free_port()
    command = [sys.executable, "-m", "modelcycle", "serve", MLP, "tiny-gpt", "--port", str(port)]
    command += ["--ssl-certfile", str(certificate), "--ssl-keyfile", str(key)]
    environment = {**os.environ, "MODELCYCLE_HOME": str(home)}
    server = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", verify=trusting(ca), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.communicate()[0].decode()
            assert time.monotonic() < deadline, "the HTTPS server never became ready"
            time.sleep(0.2)
        yield url, ca
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_openai_client_works_over_https(tls_server):
    url, ca = tls_server
    with httpx.Client(verify=trusting(ca)) as http:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", http_client=http)
        answer = client.completions.create(model="tiny-gpt", prompt="To be", max_tokens=5, temperature=0)
        assert answer.usage is not None
        assert answer.usage.completion_tokens == 5
        streamed = client.chat.completions.create(
            model="tiny-gpt", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
        )
        assert sum(1 for chunk in streamed if chunk.choices and chunk.choices[0].delta.content) >= 1


def test_tritonclient_infers_over_https(tls_server):
    import gevent.ssl

    url, ca = tls_server
    client = triton.InferenceServerClient(
        url=url.removeprefix("https://"),
        ssl=True,
        ssl_options={"ca_certs": str(ca)},
        ssl_context_factory=gevent.ssl.create_default_context,  # verifies the certificate with our CA
    )
    try:
        assert client.is_model_ready(MLP)
        (spec,) = client.get_model_metadata(MLP)["inputs"]
        tensor = triton.InferInput(spec["name"], [2, 30], "FP32")
        tensor.set_data_from_numpy(np.full((2, 30), 0.5, dtype=np.float32))
        result = client.infer(MLP, [tensor])
        outputs = result.as_numpy(result.get_response()["outputs"][0]["name"])
        assert outputs.shape[0] == 2
        assert np.isfinite(outputs).all()
    finally:
        client.close()


def test_plain_http_and_an_unknown_certificate_authority_get_nothing(tls_server):
    url, _ = tls_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/v2/health/ready", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/v2/health/ready", timeout=5)  # the system's CAs do not know ours


def test_beyond_this_machine_tls_is_required_unless_waived(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELCYCLE_ADMIN_TOKEN", "a-token")
    plain = cli("serve", MLP, "--host", "0.0.0.0")
    assert plain.exit_code == 2
    assert "refusing to serve beyond this machine over plain HTTP" in plain.stderr
    assert "--ssl-certfile" in plain.stderr
    missing = cli("serve", MLP, "--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", "k.pem")
    assert missing.exit_code == 2
    assert "cannot load them (No such file or directory)" in missing.stderr
    assert "Traceback" not in missing.stderr
    ca, certificate, _ = certificate_pair(tmp_path)
    mismatched = cli("serve", MLP, "--ssl-certfile", str(certificate), "--ssl-keyfile", str(ca))
    assert mismatched.exit_code == 2
    assert "--ssl-keyfile" in mismatched.stderr
    locked = tmp_path / "locked-key.pem"  # a passphrase-protected key: an error, not a prompt
    locked.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    protected = cli("serve", MLP, "--ssl-certfile", str(certificate), "--ssl-keyfile", str(locked))
    assert protected.exit_code == 2
    assert "cannot load them" in protected.stderr
    half = cli("serve", MLP, "--ssl-certfile", str(certificate))
    assert half.exit_code == 2
    assert "--ssl-keyfile: TLS needs both a certificate and its private key" in half.stderr


def test_the_waiver_is_the_only_way_to_plain_http_beyond_this_machine():
    from modelcycle.config import ServeConfig
    from modelcycle.errors import ConfigError
    from modelcycle.serve.transport import check_exposure

    public = ServeConfig(host="0.0.0.0")
    with pytest.raises(ConfigError, match="without an admin token"):
        check_exposure(public, None, tls=True)
    with pytest.raises(ConfigError, match="over plain HTTP"):
        check_exposure(public, "a-token", tls=False)
    check_exposure(public, "a-token", tls=True)
    check_exposure(public.model_copy(update={"allow_plain_http": True}), "a-token", tls=False)
    check_exposure(ServeConfig(), None, tls=False)  # this machine only: neither is needed


def test_a_server_whose_bundle_is_damaged_exits_with_the_reason_before_it_starts(cli, registry):
    """It stayed up, never ready, with the reason only in its log."""
    from modelcycle.testing import tiny_bundle

    bundle = tiny_bundle(registry)
    (bundle.path / "weights.safetensors").write_bytes(b"damaged")
    result = cli("serve", "tiny@1")
    assert result.exit_code == 4
    assert "weights.safetensors: sha256 mismatch" in result.stderr
    assert "Traceback" not in result.stderr
