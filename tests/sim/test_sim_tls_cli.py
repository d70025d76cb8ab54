"""Self-signed TLS and the command line."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
import re
import signal
import ssl
import subprocess
import sys

import aiohttp
from cryptography import x509
import pytest

from placeos_sim import PlaceOSSimulator
from placeos_sim.__main__ import build_parser, main
from placeos_sim.tls import generate_certificate, self_signed_ssl_context

ROOT = Path(__file__).resolve().parents[2]


def _alt_names(hostname: str) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(generate_certificate(hostname).cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return ips, names.get_values_for_type(x509.DNSName)


def test_certificate_names() -> None:
    """Always 127.0.0.1 and localhost, plus the given host as IP or DNS name."""
    assert _alt_names("127.0.0.1") == (["127.0.0.1"], ["localhost"])
    assert _alt_names("localhost") == (["127.0.0.1"], ["localhost"])
    assert _alt_names("10.1.2.3") == (["127.0.0.1", "10.1.2.3"], ["localhost"])
    assert _alt_names("placeos.test") == (["127.0.0.1"], ["localhost", "placeos.test"])
    assert ipaddress.ip_address("127.0.0.1")
    assert isinstance(self_signed_ssl_context(), ssl.SSLContext)


async def test_wss_with_trusting_and_default_clients(socket_enabled: None) -> None:
    """A client trusting the cert connects over wss; a default-verifying client fails."""
    certificate = generate_certificate()
    sim = PlaceOSSimulator(ssl_context=certificate.server_ssl_context())
    url = await sim.start()
    try:
        assert url.startswith("https://127.0.0.1:")
        assert sim.ws_url.startswith("wss://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                sim.ws_url,
                headers={"X-API-Key": "test-key"},
                ssl=certificate.client_ssl_context(),
            )
            await ws.send_str("ping")
            assert (await ws.receive(timeout=1)).data == "pong"
            await ws.close()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(url + "/auth/authority")
            async with session.get(url + "/auth/authority", ssl=False) as resp:
                assert resp.status == 200
    finally:
        await sim.stop()


def test_cli_dump_scenario(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--dump-scenario prints the scenario JSON, also for a --scenario file."""
    assert main(["--dump-scenario"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["systems"][0]["name"] == "Room 1.01 Boardroom"
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"systems": [{"id": "sys-z", "name": "Z"}]}), encoding="utf-8")
    assert main(["--dump-scenario", "--scenario", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["systems"][0]["id"] == "sys-z"
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.value_encoding) == ("127.0.0.1", 8081, "raw")


async def test_cli_serves_until_sigterm(socket_enabled: None, tmp_path: Path) -> None:
    """`python -m placeos_sim` prints its URL and key, serves, and exits 0 on SIGTERM."""
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            {
                "systems": [
                    {
                        "id": "sys-cli",
                        "name": "CLI Room",
                        "modules": [{"name": "Sensor", "status": {"people_count": 1}}],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    command = [
        sys.executable, "-m", "placeos_sim", "--port", "0", "--api-key", "cli-key",
        "--scenario", str(path), "--value-encoding", "string", "--activity", "0.05",
        "--notify-before-success", "--unsolicited-pong", "30",
    ]  # fmt: skip
    process = subprocess.Popen(  # noqa: ASYNC220 - reading two lines of a child is instant
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert match, first
        assert process.stdout.readline().strip() == "API key: cli-key"
        url = match.group(1)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                url + "/api/engine/v2/systems/control", headers={"X-API-Key": "cli-key"}
            )
            await ws.send_str(
                json.dumps(
                    {
                        "id": 1,
                        "cmd": "bind",
                        "sys": "sys-cli",
                        "mod": "Sensor",
                        "name": "people_count",
                    }
                )
            )
            notify = json.loads((await ws.receive(timeout=5)).data)
            assert notify["type"] == "notify"  # before the success, as asked
            assert notify["value"] == "1"  # stringified, as asked
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "success"
            changed = json.loads((await ws.receive(timeout=5)).data)  # activity
            assert changed["value"] in ("0", "2")
            await ws.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
